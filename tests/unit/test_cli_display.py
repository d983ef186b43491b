"""CLI rendering: tables, the experiment summary, the dry-run plan and the progress display."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from types import SimpleNamespace

from llenergymeasure.cli.display import (
    format_dry_run,
    format_experiment,
    format_memory,
    render_table,
)
from llenergymeasure.cli.progress_bars import CliProgress, format_eta, tick_text
from llenergymeasure.domain.co2 import CO2Estimate
from llenergymeasure.domain.energy import (
    BaselineAdjustment,
    EnergyMeasurement,
    EnergyReport,
    IdleBaseline,
    MeterSelection,
    QualityFlag,
)
from llenergymeasure.domain.metrics import (
    EnergyRatios,
    InferenceMetrics,
    LatencyMetrics,
    LatencyStats,
    Throughput,
    TokenCounts,
)
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.progress import ExperimentTick


def _stats(mean: float) -> LatencyStats:
    return LatencyStats(
        mean_ms=mean, p50_ms=mean - 1, p90_ms=mean + 1, p95_ms=mean + 2, p99_ms=mean + 3,
        min_ms=mean - 2, max_ms=mean + 4, n_samples=10,
    )  # fmt: skip


def _energy() -> EnergyReport:
    baseline = IdleBaseline(
        key="GPU-1", idle_power_w=60.0, idle_power_w_by_device={"gpu:0": 60.0},
        duration_s=5.0, method="counter", measured_at_unix_s=0.0,
    )  # fmt: skip
    return EnergyReport(
        window="measure",
        duration_s=2.0,
        measurements=[
            EnergyMeasurement.from_devices(
                meter="nvml",
                window="measure",
                scope="gpu",
                method="counter",
                energy_j_by_device={"gpu:0": 400.0},
                duration_s=2.0,
            )
        ],
        gpu_energy_j=400.0,
        not_measured={"cpu_package": "RAPL unreadable"},
        baseline=BaselineAdjustment(
            baseline=baseline,
            idle_power_w=60.0,
            gross_energy_j=400.0,
            idle_energy_j=120.0,
            energy_above_idle_j=280.0,
        ),
        meter_selection=MeterSelection(requested="auto", meters=["nvml"], reason="GPU visible"),
    )


def _result(energy: EnergyReport | None) -> ExperimentResult:
    metrics = InferenceMetrics(
        tokens=TokenCounts(input_tokens=300, output_tokens=200, total_tokens=500, n_requests=10),
        throughput=Throughput(
            output_tokens_per_s=100.0, total_tokens_per_s=250.0, requests_per_s=5.0, duration_s=2.0
        ),
        latency=LatencyMetrics(ttft=_stats(20.0), itl=_stats(5.0), tpot=None),
        energy_ratios=EnergyRatios(energy_j=400.0, energy_basis="gpu gross counter",
                                   j_per_output_token=2.0) if energy else None,
    )  # fmt: skip
    return ExperimentResult(
        experiment_id="abc",
        name="demo",
        config={"model": "tiny-llama", "backend": "pytorch", "precision": "bf16",
                "pytorch": {"batch_size": 8}, "n": 10},
        config_hash="0123456789abcdef",
        energy=energy,
        energy_not_measured_reason=None if energy else "no GPU and no RAPL",
        metrics=metrics,
        co2=CO2Estimate(co2_g=0.05, energy_kwh=1e-4, facility_energy_kwh=1e-4, pue=1.0,
                        carbon_intensity_gco2_kwh=475.0) if energy else None,
        warnings=[QualityFlag(code="short_window", message="window 2 s < 10 s")],
        started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )  # fmt: skip


def test_render_table_aligns_columns() -> None:
    text = render_table(("a", "long header"), [(1, "x"), (22, "yy")])
    lines = text.splitlines()
    assert lines[0] == "a   long header"
    assert lines[1] == "--  -----------"
    assert lines[3] == "22  yy"


def test_experiment_summary_shows_every_figure_with_its_method() -> None:
    text = format_experiment(_result(_energy()), "results/demo_1")
    for needle in (
        "tiny-llama", "bf16", "batch size             8", "100.00 output tok/s",
        "250.00 total tok/s", "5.000 req/s", "20.00 / 19.00 / 23.00 ms", "5.00 / 4.00 / 8.00 ms",
        "TPOT                   not measured", "400.00 J (counter, gpu, nvml)",
        "cpu_package energy     not measured: RAPL unreadable",
        "2.0000 J/output token (gpu gross counter)", "idle power             60.0 W",
        "energy above idle      280.00 J", "0.0500 g CO2e (estimate", "results/demo_1",
        "Warnings (1):", "short_window: window 2 s < 10 s",
    ):  # fmt: skip
        assert needle in text, (needle, text)


def test_experiment_summary_says_why_energy_was_not_measured() -> None:
    text = format_experiment(_result(None))
    assert "energy                 not measured: no GPU and no RAPL" in text
    assert "idle power" not in text


def test_memory_estimate_formats_terms_and_unknown() -> None:
    est = SimpleNamespace(weights_gb=2.47, kv_cache_gb=0.1, activations_overhead_gb=0.75,
                          total_gb=3.32, notes=[], method="analytic")  # fmt: skip
    assert format_memory(est) == "2.47 + 0.100 + 0.750 = 3.32 GB"
    unknown = SimpleNamespace(weights_gb=None, kv_cache_gb=None, activations_overhead_gb=None,
                              total_gb=None, notes=["architecture unknown"], method="unavailable")  # fmt: skip
    assert format_memory(unknown) == "unknown: architecture unknown"


def test_dry_run_lists_runs_skipped_points_and_totals() -> None:
    runs = [SimpleNamespace(position=i, cycle=i // 2 + 1, label=f"cfg{i % 2}",
                            config_hash=f"{i % 2}" * 16, config=i % 2) for i in range(4)]  # fmt: skip
    plan = SimpleNamespace(
        experiments=runs, unique_configs=[0, 1], n_cycles=2, order="interleaved",
        shuffle_seed=None, design_hash="feedbeef00",
        skipped=[SimpleNamespace(point={"precision": "fp8"}, reason="not supported")],
    )  # fmt: skip
    text = format_dry_run(plan, lambda cfg: f"mem{cfg}")
    rows = [line.split() for line in text.splitlines()[3:7]]
    assert rows[0] == ["1", "1/2", "cfg0", "00000000", "mem0"]
    assert rows[3] == ["4", "2/2", "cfg1", "11111111", "mem1"]
    assert "precision=fp8: not supported" in text
    assert "Total: 4 experiments = 2 configs x 2 cycles; 1 skipped" in text


def test_eta_and_tick_text() -> None:
    assert format_eta(None) == ""
    assert format_eta(12.4) == "ETA 12s"
    assert format_eta(185) == "ETA 3m05s"
    assert format_eta(3720) == "ETA 1h02m"
    tick = ExperimentTick(index=3, total=12, cycle=1, n_cycles=2, label="bf16 b8", eta_s=90)
    assert tick_text(tick) == "experiment 3/12, cycle 1/2, bf16 b8, ETA 1m30s"


def test_progress_writes_lines_to_its_stream_and_quiet_silences_it() -> None:
    stream = io.StringIO()
    progress = CliProgress(stream=stream)
    tick = ExperimentTick(index=1, total=2, cycle=1, n_cycles=1, label="a")
    progress.experiment_started(tick)
    progress.stage("loading model")
    progress.prompts_done(3, 10)
    progress.experiment_finished(tick, "completed")
    progress.message("waiting 5 s between configs")
    progress.close()
    out = stream.getvalue()
    for needle in ("experiment 1/2, cycle 1/1, a", "loading model", "-> completed", "waiting 5 s"):
        assert needle in out
    quiet = io.StringIO()
    silent = CliProgress(quiet=True, stream=quiet)
    silent.experiment_started(tick)
    silent.stage("loading model")
    silent.prompts_done(3, 10)
    silent.close()
    assert quiet.getvalue() == ""


def test_experiment_summary_says_where_the_time_went() -> None:
    from llenergymeasure.domain.results import WarmupResult

    result = _result(_energy()).model_copy(
        update={
            "measurement_window_s": 2.0,
            "phase_durations_s": {"start": 1.0, "imports": 2.0, "prompts": 0.1, "load": 3.0,
                                  "tokenise": 0.1, "warmup": 1.5, "measure": 2.1},
            "warmup": WarmupResult(mode="fixed", runs=3, latencies_s=[1.0, 0.25, 0.25]),
        }
    )  # fmt: skip
    text = format_experiment(result)
    assert "time                   window 2.00 s, outside it 7.80 s; overhead 4.80 s" in text
    assert "(outside minus load and baseline; goal <= 5 s)" in text
    assert "start 1.00 | imports 2.00 | prompts 0.10 | load 3.00" in text
    assert "warm-up 1.50 (first call 1.00) | close 0.10" in text
    assert "time" not in format_experiment(_result(None))  # no phases: no time lines
