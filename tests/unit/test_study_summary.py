"""The study summary table: CIs per metric, best marked, missing metrics explained, 120 cols."""

from __future__ import annotations

from llenergymeasure.domain.study import (
    STUDY_METRICS,
    ConfigSummary,
    MetricStats,
    StudyCounts,
    StudyResult,
    StudyTiming,
)
from llenergymeasure.study.stats import summarise_cycles
from llenergymeasure.study.summary import format_study_table


def _config(label: str, values: dict[str, list[float] | None], best: bool = False) -> ConfigSummary:
    metrics = {}
    for name, (_, unit) in STUDY_METRICS.items():
        v = values.get(name)
        stats = summarise_cycles(v) if v else None
        reason = None if stats else "no GPU energy counter (NVML unavailable)"
        metrics[name] = MetricStats(unit=unit, stats=stats, not_measured_reason=reason)
    return ConfigSummary(
        config_hash=label * 8,
        label=label,
        key_fields={},
        cycles_planned=3,
        cycles_completed=3,
        result_paths=[],
        metrics=metrics,
        best=best,
    )


def _result(configs: list[ConfigSummary]) -> StudyResult:
    return StudyResult(
        study_name="s",
        study_dir="/tmp/s",
        status="completed",
        design_hash="h",
        order="interleaved",
        shuffle_seed=None,
        n_cycles=3,
        counts=StudyCounts(planned=6, completed=6, failed=0, skipped=0, not_run=0),
        configs=configs,
        timing=StudyTiming(
            wall_time_s=1,
            experiments_wall_s=1,
            measurement_s=0.5,
            outside_measurement_s=0.5,
            gap_s=0,
        ),
    )


def test_table_shows_means_and_cis_marks_best_and_explains_missing() -> None:
    full = {
        "energy_j": [1234.5, 1250.1, 1240.0],
        "j_per_output_token": [0.0123, 0.0125, 0.0124],
        "output_tokens_per_s": [2345.0, 2400.0, 2390.0],
        "ttft_ms_mean": [45.6, 47.1, 46.0],
        "itl_ms_mean": [12.3, 12.5, 12.4],
    }
    partial = {"output_tokens_per_s": [1000.0, 1010.0, 990.0], "ttft_ms_mean": [30.0, 31.0, 29.0]}
    a_long_label = "precision=bf16 batch_size=64 attn_implementation=sdpa max_num_seqs=256"
    table = format_study_table(
        _result(
            [
                _config("precision=fp16 batch_size=8", full, best=True),
                _config(a_long_label, partial),
            ]
        )
    )

    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 120, table
    best_row = next(line for line in lines if line.startswith("*"))
    assert "precision=fp16 batch_size=8" in best_row
    assert "12.4" in best_row  # J/token shown in mJ
    assert "[1.23e+03" not in table and "1242" in best_row
    assert "n/a[1]" in table
    assert "n/a[1]: not measured: no GPU energy counter (NVML unavailable)" in table
    assert "* best: lowest mean J per output token" in table.replace("\n    ", " ")
    assert "95% CI" in table


def test_table_lists_failures_stop_and_warnings() -> None:
    from llenergymeasure.domain.study import StudyFailure

    result = _result([_config("a", {"output_tokens_per_s": [1.0, 2.0]})])
    result.failures = [
        StudyFailure(
            position=1,
            cycle=2,
            label="a",
            config_hash="h",
            reason="timed out after 3 s",
            failure_path="failures/1_a.txt",
        )
    ]
    result.stopped_reason = "3 consecutive experiments failed"
    result.counts.not_run = 2
    result.warnings = ["only 2 cycle(s)"]

    table = format_study_table(result)

    assert "FAILED a (cycle 2): timed out after 3 s -> failures/1_a.txt" in table
    assert "STOPPED: 3 consecutive experiments failed" in table
    assert "2 experiment(s) not run" in table
    assert "warning: only 2 cycle(s)" in table
