"""Energy by phase at run time: the counter trace, the session's choice of whether to trace,
the attribution after the window, the summary lines and the report section (the end-to-end
runs are in tests/integration/test_phase_energy_run.py)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from phase_scenarios import device_for, read_times, static_batches, window_of
from report_factory import write_study

from llenergymeasure import report
from llenergymeasure.cli.display import format_experiment
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.energy import EnergySession
from llenergymeasure.core.energy.counter_trace import (
    CounterTracer,
    DeviceTrace,
    PhaseTraceSettings,
    WindowTrace,
)
from llenergymeasure.core.energy.intervals import counter_intervals
from llenergymeasure.core.energy.sensor_profiles import (
    choose_method,
    merge_profiles,
    profile_for,
    trace_is_free,
)
from llenergymeasure.core.metrics import RequestTiming
from llenergymeasure.domain.phases import (
    DECODE,
    MIXED,
    OTHER,
    PREFILL,
    SensorProfile,
    StepTokens,
    TraceCost,
)
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.orchestration.phase_energy import (
    MULTI_PROCESS_REASON,
    attribute_window,
    engine_step_spans,
    phase_trace_settings,
    spans_and_steps,
    token_clock_offset_s,
)
from llenergymeasure.reporting.phases import NOT_MEASURED, phase_energy, phases_not_measured
from llenergymeasure.testing import FakeDevice, FakeNVML, fake_gpus

NO_RAPL = Path("/nonexistent-powercap")
TRUE_W = {PREFILL: 600.0, DECODE: 400.0, OTHER: 150.0}


def _trace_of(device: FakeDevice, seed: int, window: tuple[float, float]) -> DeviceTrace:
    """A dithered fast-read trace of ``device``, kept the way the tracer keeps it."""
    trace = DeviceTrace("gpu:0")
    t = read_times(seed, *window)
    for ti, v in zip(t, device.energy_trace_mj(t), strict=True):
        trace.add(float(ti), 0.0, v)
    trace.close()
    return trace


def _timings(spans: list[object]) -> list[RequestTiming]:
    """Static-batch timings (8 requests per batch) matching phase_scenarios' spans."""
    out = []
    pairs = list(zip(spans[::2], spans[1::2], strict=True))
    for pf, dc in pairs:
        n = 8
        steps = 128
        times = [pf.end_s + k * (dc.end_s - pf.end_s) / (steps - 1) for k in range(steps)]  # type: ignore[attr-defined]
        out += [RequestTiming(pf.start_s, times, 256, steps) for _ in range(n)]  # type: ignore[attr-defined]
    return out


# --- the trace ----------------------------------------------------------------------------
def test_the_trace_keeps_only_the_reads_around_each_step() -> None:
    spans = static_batches(5, duration_s=6.0)
    dev = device_for(spans, 5)
    window = window_of(spans)
    t = read_times(5, *window)
    full = counter_intervals(t, dev.energy_trace_mj(t))
    kept = _trace_of(dev, 5, window)
    iv = counter_intervals(kept.t_s, kept.energy_mj, kept.read_s)
    assert kept.n_reads == t.size and len(kept.t_s) <= 2 * kept.steps + 2
    np.testing.assert_allclose(iv.edges_s, full.edges_s)
    np.testing.assert_allclose(iv.energy_j, full.energy_j)
    assert kept.mean_interval_s == pytest.approx(0.004, rel=0.1)


def test_attribution_of_a_traced_window_recovers_the_phase_powers() -> None:
    spans = static_batches(3, duration_s=12.0)
    dev = device_for(spans, 3)
    window = window_of(spans)
    trace = WindowTrace(window, {"gpu:0": _trace_of(dev, 3, window)}, 0.004)
    timings = _timings(spans)
    phases, per = attribute_window(trace, timings, [], timing_method="cuda_events",
                                   edge_energy_j_by_device={"gpu:0": 1.0})  # fmt: skip
    assert phases.not_measured is None
    for phase, watts in TRUE_W.items():
        p = phases.phases[phase].power_w
        assert p is not None and p.se is not None and abs(p.value - watts) <= 3.3 * p.se
    assert phases.trace is not None and phases.trace.n_reads > 1000
    assert phases.edge_counter_energy_j == 1.0
    assert any("static batches" in n for n in phases.notes)
    assert per.not_measured is None and per.n_requests == len(timings)
    assert per.sum_energy_j == pytest.approx(phases.counter_energy_j)
    assert {r.output_tokens for r in per.requests} == {128}


def test_a_too_short_window_is_not_measured_with_the_reason() -> None:
    spans = static_batches(4, duration_s=1.0)
    dev = device_for(spans, 4)
    window = window_of(spans)
    trace = WindowTrace(window, {"gpu:0": _trace_of(dev, 4, window)}, 0.004)
    phases, per = attribute_window(trace, _timings(spans), [], timing_method="cuda_events")
    assert phases.not_measured is not None and phases.not_measured.startswith("window too short")
    assert per.not_measured is not None


def test_beam_search_without_token_times_is_not_measured() -> None:
    window = (0.0, 10.0)
    trace = WindowTrace(window, {"gpu:0": DeviceTrace("gpu:0")}, 0.004)
    timings = [RequestTiming(0.0, [], 10, 5)]
    phases, per = attribute_window(trace, timings, [], timing_method="e2e_only")
    assert phases.not_measured is not None and "no per-token times" in phases.not_measured
    assert per.not_measured == phases.not_measured


def test_engine_steps_become_prefill_decode_and_mixed_spans() -> None:
    steps = [
        StepTokens(0.0, 0.01, {"a": 100}, {}),
        StepTokens(0.01, 0.02, {"b": 50}, {"a": 1}),
        StepTokens(0.02, 0.03, {}, {"a": 1, "b": 1}),
        StepTokens(0.03, 0.04, {}, {}),  # a chunked prefill's earlier chunk: no tokens
    ]
    spans = engine_step_spans(steps)
    assert [(s.phase, s.tokens) for s in spans] == [
        (PREFILL, 100), (MIXED, 0), (DECODE, 2), (PREFILL, 0),
    ]  # fmt: skip
    _got, moved, how = spans_and_steps([], steps, "engine_steps")
    assert "engine step loop" in how and moved == steps
    assert token_clock_offset_s() == 0.0  # Linux: perf_counter and monotonic are one clock


# --- the session's decision ---------------------------------------------------------------
def _window_report(session: EnergySession) -> object:
    with session:
        session.begin_window("measure")
        time.sleep(0.05)
        return session.end_window("measure")


def test_no_gpu_says_phases_are_not_measured() -> None:
    session = EnergySession("auto", [], rapl_root=NO_RAPL, cpu_tdp_w=100.0,
                            phase_trace=PhaseTraceSettings("on"))  # fmt: skip
    rep = _window_report(session)
    assert rep.phases.not_measured == "no GPU energy counter: no GPU in use"  # type: ignore[attr-defined]
    assert rep.per_request.not_measured == rep.phases.not_measured  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("devices", "settings", "reason"),
    [
        (fake_gpus(1, name="Fake H200"), PhaseTraceSettings("auto"), "is not measured yet"),
        (fake_gpus(2), PhaseTraceSettings("on"), "2 GPUs in use"),
        (fake_gpus(1), PhaseTraceSettings("off", MULTI_PROCESS_REASON), MULTI_PROCESS_REASON),
        (
            fake_gpus(1, counter_supported=False),
            PhaseTraceSettings("on"),
            "no GPU energy counter on gpu:0",
        ),
    ],
)
def test_untraced_windows_say_why(devices: list[FakeDevice], settings: PhaseTraceSettings, reason: str) -> None:  # fmt: skip
    with FakeNVML(devices).installed():
        session = EnergySession("nvml", None, sampler_enabled=False, phase_trace=settings)
        rep = _window_report(session)
    assert session.tracer is None and session.window_trace("measure") is None
    assert reason in rep.phases.not_measured  # type: ignore[attr-defined]


def test_auto_traces_where_the_profile_shows_the_trace_is_free() -> None:
    free = SensorProfile(gpu_name="Fake H200", status="measured", counter_trace_cost=TraceCost(
        throughput_ratio=0.998, ci_low=0.99, ci_high=1.004, n_pairs=6))  # fmt: skip
    fake = FakeNVML(fake_gpus(1, name="Fake H200", power_w=300.0))
    with fake.installed():
        session = EnergySession("nvml", None, sampler_enabled=False,
                                phase_trace=PhaseTraceSettings("auto", profiles={"Fake H200": free}))  # fmt: skip
        with session:
            assert session.tracer is not None
            session.begin_window("measure")
            time.sleep(0.4)
            rep = session.end_window("measure")
            trace = session.window_trace("measure")
    assert rep.phases is None  # attributed later, from the trace
    assert trace is not None and set(trace.devices) == {"gpu:0"}
    dev = trace.devices["gpu:0"]
    t0, t1 = trace.window
    assert dev.steps >= 4 and dev.t_s[0] < t0 and (dev.last_step_lo_s or 0.0) >= t1
    iv = counter_intervals(dev.t_s, dev.energy_mj, dev.read_s)
    assert iv.period_s == pytest.approx(0.1, abs=0.01)
    assert np.allclose(iv.energy_j / iv.duration_s, 300.0, rtol=0.15)


def test_the_tracer_starts_in_the_background_and_a_failed_start_is_said() -> None:
    """The session launches the tracer without waiting (its start overlaps baseline and
    warm-up); the first traced window waits for it, and one that cannot start (here: a GPU
    index the NVML does not have) leaves the window untraced with the reason."""
    fake = FakeNVML(fake_gpus(1, power_w=300.0))
    with fake.installed():
        session = EnergySession("nvml", None, sampler_enabled=False,
                                phase_trace=PhaseTraceSettings("on"))  # fmt: skip
        with session:
            tracer = session.tracer
            assert tracer is not None and tracer.running and not tracer.ready
            tracer.stop()
            bad = CounterTracer(dataclasses.replace(tracer.source, nvml_indices=(7,)))
            bad.launch()
            session.tracer = bad
            session.begin_window("measure")
            time.sleep(0.05)
            rep = session.end_window("measure")
    assert session.tracer is None and session.window_trace("measure") is None
    assert not bad.running
    why = rep.phases.not_measured  # type: ignore[attr-defined]
    assert why.startswith("the counter tracer did not start: ") and len(why) > 34


def test_trace_cost_rule_and_profiles_merge() -> None:
    unmeasured = profile_for("Tesla T4")
    assert trace_is_free(unmeasured)[0] is False
    slow = unmeasured.model_copy(update={"counter_trace_cost": TraceCost(throughput_ratio=0.95)})
    ok, why = trace_is_free(slow)
    assert not ok and "below 0.99" in why
    # a good median over noisy pairs is not enough: the CI must rule out a cost above 2 %
    unsure = TraceCost(throughput_ratio=1.007, ci_low=0.939, ci_high=1.041, n_pairs=3)
    ok, why = trace_is_free(unmeasured.model_copy(update={"counter_trace_cost": unsure}))
    assert not ok and "[0.9390, 1.0410]" in why and "more pairs" in why
    no_ci = TraceCost(throughput_ratio=1.0, n_pairs=1)
    assert not trace_is_free(unmeasured.model_copy(update={"counter_trace_cost": no_ci}))[0]
    sure = TraceCost(throughput_ratio=0.995, ci_low=0.981, ci_high=1.01, n_pairs=20)
    assert trace_is_free(unmeasured.model_copy(update={"counter_trace_cost": sure}))[0]
    doc = {"schema_version": 1, "profiles": {"X": slow.model_dump(mode="json")}}
    merged = merge_profiles(doc, doc)
    assert merged["profiles"]["X"]["counter_trace_cost"]["throughput_ratio"] == 0.95
    again = {"schema_version": 1, "profiles": {"X": unmeasured.model_dump(mode="json")}}
    kept = merge_profiles(merged, again)  # re-characterised: the trace cost stays
    assert kept["profiles"]["X"]["counter_trace_cost"]["throughput_ratio"] == 0.95
    assert choose_method(unmeasured).fine_signal is None


def test_phase_trace_settings_from_the_config() -> None:
    base = {"model": "tiny-llama"}
    assert phase_trace_settings(ExperimentConfig.model_validate(base)).mode == "auto"
    off = ExperimentConfig.model_validate({**base, "telemetry": {"enabled": False}})
    assert phase_trace_settings(off).mode == "off"
    on = ExperimentConfig.model_validate({**base, "telemetry": {"enabled": False, "phase_energy": "on"}})  # fmt: skip
    assert phase_trace_settings(on).mode == "on"
    multi = ExperimentConfig.model_validate({**base, "pytorch": {"num_processes": 2}})
    assert phase_trace_settings(multi).off_reason == MULTI_PROCESS_REASON
    # the default is not spelled out in the config hash (old hashes stay valid)
    from llenergymeasure.config.hashing import hashed_fields

    assert "phase_energy" not in hashed_fields(ExperimentConfig.model_validate(base))["telemetry"]


# --- the summary and the report -----------------------------------------------------------
def _attributed(result: ExperimentResult, seed: int = 3) -> ExperimentResult:
    spans = static_batches(seed, duration_s=12.0)
    dev = device_for(spans, seed)
    window = window_of(spans)
    trace = WindowTrace(window, {"gpu:0": _trace_of(dev, seed, window)}, 0.004)
    phases, per = attribute_window(trace, _timings(spans), [], timing_method="cuda_events")
    assert result.energy is not None
    energy = result.energy.model_copy(update={"phases": phases, "per_request": per})
    return result.model_copy(update={"energy": energy})


def _study_with_phases(tmp_path: Path, attributed: bool) -> Path:
    study_dir = write_study(tmp_path, "ph", batch_sizes=(1, 4), n_cycles=1)
    for path in study_dir.glob("*/result.json"):
        result = ExperimentResult.model_validate_json(path.read_text())
        if attributed:
            result = _attributed(result)
        else:
            assert result.energy is not None
            nm = result.energy.model_copy(update={"phases": None})
            from llenergymeasure.domain.phases import PhaseEnergyReport

            nm.phases = PhaseEnergyReport(window_s=10.0, not_measured="no GPU energy counter: no GPU in use")  # fmt: skip
            result = result.model_copy(update={"energy": nm})
        path.write_text(result.model_dump_json())
    return study_dir


def test_summary_lines_show_phases_with_cis_and_method(tmp_path: Path) -> None:
    study_dir = _study_with_phases(tmp_path, attributed=True)
    path = next(study_dir.glob("*/result.json"))
    result = ExperimentResult.model_validate_json(path.read_text())
    text = format_experiment(result)
    line = next(x for x in text.splitlines() if x.strip().startswith("prefill energy"))
    assert "mJ/prompt token [" in line and " W)" in line
    assert "decode energy" in text and "mJ/decode token" in text
    assert "counter regression, energy counter at 100.2 ms" in text and "[95 % CI]" in text
    assert re.search(r"energy / request +mean .* p50 .* p99 ", text)
    got = phase_energy(result)
    assert got is not None and {p.phase for p in got} == {PREFILL, DECODE, OTHER}
    assert phases_not_measured(result) is None


def test_summary_and_report_say_why_not_measured(tmp_path: Path) -> None:
    study_dir = _study_with_phases(tmp_path, attributed=False)
    path = next(study_dir.glob("*/result.json"))
    result = ExperimentResult.model_validate_json(path.read_text())
    text = format_experiment(result)
    assert re.search(r"energy by phase +not measured: no GPU energy counter: no GPU in use", text)
    text = report(study_dir).read_text()
    assert "not measured: no GPU energy counter: no GPU in use" in text
    legacy = result.model_copy(update={"energy": result.energy.model_copy(update={"phases": None})})  # type: ignore[union-attr]
    assert phases_not_measured(legacy) == NOT_MEASURED


def test_report_renders_the_phase_chart_with_the_method(tmp_path: Path) -> None:
    text = report(_study_with_phases(tmp_path, attributed=True)).read_text()
    declared = int(re.search(r'<meta name="llem-chart-count" content="(\d+)">', text)[1])  # type: ignore[index]
    charts = re.findall(r'<section class="chart" data-chart="([\w-]+)">', text)
    assert "phase-energy" in charts and declared == len(charts)
    section = text[text.index('data-chart="phase-energy"') :]
    assert "Attribution: counter regression, energy counter at 100.2 ms" in section
    assert json.dumps("prefill")[1:-1] in section


def test_multi_process_merge_keeps_the_not_measured_reason() -> None:
    from llenergymeasure.domain.phases import PerRequestEnergy, PhaseEnergyReport
    from llenergymeasure.results.aggregation import merge_energy_reports

    with FakeNVML(fake_gpus(1)).installed():
        session = EnergySession("nvml", None, sampler_enabled=False,
                                phase_trace=PhaseTraceSettings("off", MULTI_PROCESS_REASON))  # fmt: skip
        rep = _window_report(session)
    assert isinstance(rep.phases, PhaseEnergyReport)  # type: ignore[attr-defined]
    merged = merge_energy_reports([rep, rep], 1.0)  # type: ignore[list-item]
    assert merged is not None and merged.phases is not None
    assert merged.phases.not_measured == MULTI_PROCESS_REASON
    assert isinstance(merged.per_request, PerRequestEnergy)
    measured = rep.model_copy(update={"phases": PhaseEnergyReport(window_s=1.0)})  # type: ignore[attr-defined]
    assert merge_energy_reports([measured, measured], 1.0).phases is None  # type: ignore[union-attr]


def test_export_rows_carry_phase_columns(tmp_path: Path) -> None:
    from llenergymeasure.reporting.collect import collect
    from llenergymeasure.reporting.frame import rows

    table = rows(collect(_study_with_phases(tmp_path, attributed=True)))
    assert table and all(r["prefill_j_per_token"] and r["decode_energy_j"] for r in table)
    assert all(r["energy_per_request_p99_j"] >= r["energy_per_request_p50_j"] for r in table)
