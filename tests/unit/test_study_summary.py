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


# ---- the summary says what it measured (issue 11, case 11) ------------------------------------
def _built(gpu_for: tuple[int, ...] = ()):  # type: ignore[no-untyped-def]
    """A 2-config x 2-cycle study built from fake results; configs at ``gpu_for`` (indexes)
    measured with a GPU counter instead of the CPU estimate."""
    from pathlib import Path

    from llenergymeasure.config.models import StudyConfig
    from llenergymeasure.domain.energy import EnergyMeasurement
    from llenergymeasure.study.grid import expand_study
    from llenergymeasure.study.manifest import new_manifest
    from llenergymeasure.study.summary import build_study_result
    from llenergymeasure.testing import fake_result

    study = StudyConfig(
        study_name="s",
        base={"model": "tiny-llama", "device": "cpu", "n": 2, "precision": "fp32"},
        sweep={"max_output_tokens": [2, 3], "pytorch.batch_size": [4]},
        execution={"n_cycles": 2},
    )
    plan = expand_study(study)
    manifest = new_manifest(plan)
    results = {}
    for e in manifest.entries:
        e.status, e.result_path = "completed", f"r{e.position}/result.json"
        config = next(p.config for p in plan.experiments if p.position == e.position)
        r = fake_result(config)
        if [u.config_hash for u in plan.unique_configs].index(e.config_hash) in gpu_for:
            gpu = EnergyMeasurement.from_devices(
                meter="nvml", window="measure", scope="gpu", method="counter",
                energy_j_by_device={"gpu:0": 5.0}, duration_s=1.0,
            )  # fmt: skip
            energy = r.energy.model_copy(update={"measurements": [gpu], "gpu_energy_j": 5.0})
            r = r.model_copy(update={"energy": energy, "warnings": []})
        results[e.key] = r
    return build_study_result(
        plan=plan, manifest=manifest, study_dir=Path("/tmp/s"), results=results,
        gap_s=0.0, wall_time_s=1.0,
    )  # fmt: skip


def test_key_fields_include_the_swept_fields() -> None:
    result = _built()
    assert [c.key_fields["max_output_tokens"] for c in result.configs] == [2, 3]
    assert all(c.key_fields["model"] == "tiny-llama" for c in result.configs)
    assert "pytorch.batch_size" not in result.configs[0].key_fields  # one value: not varying


def test_the_table_states_the_energy_basis_and_counts_flagged_experiments() -> None:
    result = _built()
    assert [c.energy_basis for c in result.configs] == ["estimate (cpu_package)"] * 2
    assert [(c.flagged, c.flag_codes) for c in result.configs] == [(2, {"estimate_used": 2})] * 2

    table = format_study_table(result)

    lines = table.splitlines()
    assert "energy: estimate (cpu_package): an ESTIMATE (not a measurement)" in lines[2]
    assert lines[0].split()[-1] == "flagged"
    best = next(line for line in lines if line.startswith("*"))
    assert best.split()[-1] == "2/2"
    assert "flagged: completed cycles with quality warnings: estimate_used (4)" in table
    assert max(len(line) for line in lines) <= 120


def test_mixed_energy_bases_get_a_column() -> None:
    result = _built(gpu_for=(1,))
    assert [c.energy_basis for c in result.configs] == ["estimate (cpu_package)", "counter (gpu)"]
    assert [c.flagged for c in result.configs] == [2, 0]

    table = format_study_table(result)

    rows = [line for line in table.splitlines() if "max_output_tokens=" in line]
    assert rows[0].split()[-1] == "estimate/cpu_package" and rows[0].split()[-2] == "2/2"
    assert rows[1].split()[-1] == "counter/gpu" and rows[1].split()[-2] == "0/2"
    assert "energy basis differs between configs" in table
    assert max(len(line) for line in table.splitlines()) <= 120
