"""Energy by phase and by request: counter intervals, the phase regression, per-request shares.

Workloads come from phase_scenarios.py: the fake NVML draws a known power per phase (or per
engine step), its counter steps every 100.2 ms with jitter, and the trace is read at dithered
2-6 ms gaps.
"""

from __future__ import annotations

import numpy as np
import pytest
from phase_scenarios import (
    A_J_PER_PREFILL,
    B_J_PER_DECODE,
    C_STEP_W,
    GAP_W,
    OTHER_W,
    PERIOD_S,
    POWER_W,
    StepSpan,
    continuous_batching,
    device_for,
    read_times,
    static_batches,
    step_power_w,
    trace_intervals,
    traced_window,
    window_of,
)

from llenergymeasure.core.energy._nvml import nvml
from llenergymeasure.core.energy.intervals import Coverage, counter_intervals, phase_coverages
from llenergymeasure.core.energy.per_request import per_request_energy
from llenergymeasure.core.energy.phases import fine_signal_estimate, phase_energy_report
from llenergymeasure.core.energy.regression import LinearFit, NotIdentifiable, fit_linear
from llenergymeasure.core.energy.step_records import static_batch_spans, static_batch_steps
from llenergymeasure.core.metrics import RequestTiming
from llenergymeasure.domain.phases import (
    DECODE,
    OTHER,
    PREFILL,
    PerRequestEnergy,
    PhaseEnergyReport,
    PhaseSpan,
)
from llenergymeasure.testing import FakeDevice, FakeNVML, ManualClock, power_schedule_from_spans

TRUE_W = {**POWER_W, OTHER: OTHER_W}


# --- counter intervals --------------------------------------------------------------------
def test_counter_intervals_find_the_steps_and_their_energy() -> None:
    dev = FakeDevice("GPU-a", power_w=200.0, counter_period_s=PERIOD_S, counter_phase_s=0.03)
    t = read_times(0, 1.0, 6.0)
    iv = counter_intervals(t, dev.energy_trace_mj(t))
    assert iv.edge_model == "grid"
    assert iv.period_s == pytest.approx(PERIOD_S, abs=1e-3)
    true_edges = np.array([dev.step_time_s(0.0, round((e - 0.03) / PERIOD_S)) for e in iv.edges_s])
    assert np.all(np.abs(iv.edges_s - true_edges) <= 3 * iv.edge_sd_s + 1e-6)
    assert np.allclose(iv.energy_j, 200.0 * iv.duration_s, atol=0.2)


def test_counter_intervals_fall_back_to_midpoints_for_irregular_steps() -> None:
    dev = FakeDevice("GPU-a", power_w=200.0, counter_period_s=PERIOD_S, counter_jitter_s=0.04)
    t = read_times(1, 1.0, 6.0)
    iv = counter_intervals(t, dev.energy_trace_mj(t))
    assert iv.edge_model == "midpoint"
    assert np.all(iv.edge_sd_s <= 0.006 / np.sqrt(12) + 1e-9)


def test_counter_going_backwards_is_refused() -> None:
    with pytest.raises(ValueError, match="backwards"):
        counter_intervals([0.0, 0.1, 0.2], [5, 10, 3])


def test_coverage_integral_matches_brute_force_with_delay_and_averaging() -> None:
    spans = [(0.0, 0.013), (0.05, 0.09), (0.2, 0.21), (0.4, 0.7)]
    cov = Coverage.union(spans)
    fine = np.arange(-1.0, 2.0, 1e-5)
    ind = np.zeros_like(fine)
    for a, b in spans:
        ind[(fine >= a) & (fine < b)] = 1.0
    w, d = 0.03, 0.011
    n_w = round(w / 1e-5)
    kernel = np.ones(n_w) / n_w
    smoothed = np.convolve(ind, kernel)[: fine.size]  # trailing average
    for a, b in [(0.0, 0.1), (0.07, 0.25), (0.3, 0.75), (-0.5, 1.5)]:
        m = (fine >= a - d) & (fine < b - d)
        assert cov.integral(np.array([a]), np.array([b]), d, w)[0] == pytest.approx(
            smoothed[m].sum() * 1e-5, abs=2e-4
        )
        assert cov.integral(np.array([a]), np.array([b]))[0] == pytest.approx(
            ind[(fine >= a) & (fine < b)].sum() * 1e-5, abs=2e-5
        )


def test_overlapping_spans_of_different_phases_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        phase_coverages([PhaseSpan(PREFILL, 0.0, 0.2), PhaseSpan(DECODE, 0.1, 0.3)])


# --- phase regression ---------------------------------------------------------------------
def _report(seed: int, **kwargs: object) -> PhaseEnergyReport:
    spans = static_batches(seed)
    dev = device_for(spans, seed)
    window = window_of(spans)
    return phase_energy_report(trace_intervals(dev, seed, window), spans, window, **kwargs)  # type: ignore[arg-type]


def test_phase_powers_recovered_within_ci_through_the_nvml_adapter() -> None:
    spans = static_batches(3)
    clock = ManualClock(0.0)
    fake = FakeNVML([device_for(spans, 3)], clock=clock.now)
    window = window_of(spans)
    t_read = read_times(3, *window)
    with fake.installed():
        handle = nvml.handle_by_index(0)
        values = []
        for t in t_read:
            clock.t_s = t
            values.append(nvml.total_energy_mj(handle))
    rep = phase_energy_report(counter_intervals(t_read, values), spans, window)
    assert rep.not_measured is None and rep.method == "counter_regression"
    for phase, watts in TRUE_W.items():
        p = rep.phases[phase].power_w
        assert p is not None and p.ci_low is not None and p.ci_high is not None
        assert p.ci_low <= watts <= p.ci_high, phase
    assert abs(rep.residual_pct or 0.0) < 1.0
    total = sum(pe.energy_j.value for pe in rep.phases.values() if pe.energy_j)
    assert total == pytest.approx(rep.counter_energy_j, rel=1e-9)
    assert rep.phases[PREFILL].j_per_token is not None and rep.resolution_s == pytest.approx(
        PERIOD_S, abs=1e-3
    )


def test_phase_ci_coverage_over_seeds_is_nominal() -> None:
    """95 % CIs over 60 seeds x 3 phases: coverage near 95 % and z-scores near N(0, 1)."""
    z: dict[str, list[float]] = {p: [] for p in TRUE_W}
    for seed in range(60):
        rep = _report(seed)
        for phase, watts in TRUE_W.items():
            p = rep.phases[phase].power_w
            assert p is not None and p.se
            z[phase].append((p.value - watts) / p.se)
    arr = np.array(list(z.values()))
    coverage = np.mean(np.abs(arr) < 2.0)
    assert 0.9 <= coverage <= 1.0, coverage
    assert np.all(np.mean(np.abs(arr) < 2.0, axis=1) >= 0.85)
    assert np.all(np.abs(arr.mean(axis=1)) < 0.4)  # no bias
    assert np.all(arr.std(axis=1) < 1.3)  # SE not too small


def test_all_decode_window_says_prefill_is_not_measured() -> None:
    spans = [PhaseSpan(DECODE, 1.0, 11.0, tokens=5000)]
    dev = device_for(spans, 0)
    rep = phase_energy_report(trace_intervals(dev, 0, (1.0, 11.0)), spans, (1.0, 11.0))
    assert PREFILL not in rep.phases  # no prefill span at all
    decode = rep.phases[DECODE]
    assert decode.power_w is not None and decode.power_w.ci_low is not None
    assert decode.power_w.ci_low <= 400.0 <= (decode.power_w.ci_high or 0.0)
    spans2 = [PhaseSpan(PREFILL, 1.0, 1.0), *spans]  # an empty prefill span: phase known, no time
    rep2 = phase_energy_report(trace_intervals(dev, 0, (1.0, 11.0)), spans2, (1.0, 11.0))
    assert PREFILL not in rep2.phases or rep2.phases[PREFILL].not_measured


def test_short_window_is_not_measured_with_the_reason() -> None:
    spans = static_batches(0, duration_s=1.0)
    dev = device_for(spans, 0)
    window = window_of(spans)
    rep = phase_energy_report(trace_intervals(dev, 0, window), spans, window)
    assert rep.not_measured is not None and "too short" in rep.not_measured
    assert rep.phases == {}


def test_phase_locked_prefill_is_not_identifiable() -> None:
    """A prefill exactly every counter period: its share is the same in every interval."""
    spans, t = [], 1.0
    while t < 21.0:
        spans += [PhaseSpan(PREFILL, t, t + 0.03), PhaseSpan(DECODE, t + 0.03, t + PERIOD_S)]
        t += PERIOD_S
    dev = device_for(spans, 0, noise_w=0.0, jitter_s=0.0)
    window = window_of(spans)
    rep = phase_energy_report(trace_intervals(dev, 0, window), spans, window)
    assert rep.not_measured is not None and "not identifiable" in rep.not_measured
    assert "collinear" in rep.not_measured


def test_a_tiny_other_phase_is_folded_and_says_so() -> None:
    spans = static_batches(5, gap_s=(0.0, 0.0002))
    dev = device_for(spans, 5)
    window = window_of(spans)
    rep = phase_energy_report(trace_intervals(dev, 5, window), spans, window)
    other = rep.phases[OTHER]
    assert other.notes and "taken equal to" in other.notes[0]
    assert other.power_w == rep.phases[DECODE].power_w


def test_counter_delay_from_the_profile_is_corrected() -> None:
    spans = static_batches(7)
    dev = device_for(spans, 7, delay_s=0.025)
    window = window_of(spans)
    iv = trace_intervals(dev, 7, (window[0], window[1] + 0.1))
    fixed = phase_energy_report(iv, spans, window, delay_s=0.025)
    p = fixed.phases[PREFILL].power_w
    assert p is not None and (p.ci_low or 0) <= 600.0 <= (p.ci_high or 0)
    naive = phase_energy_report(iv, spans, window).phases[PREFILL].power_w
    assert naive is not None and abs(naive.value - 600.0) > abs(p.value - 600.0)


def _energy_errors_pct(rep: PhaseEnergyReport, true_j: dict[str, float]) -> dict[str, float]:
    out = {}
    for phase in (PREFILL, DECODE):
        e = rep.phases[phase].energy_j
        assert e is not None
        out[phase] = 100.0 * (e.value - true_j[phase]) / true_j[phase]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_window_whose_first_step_draws_little_is_fitted_not_extrapolated(seed: int) -> None:
    """The H200 decode-heavy miss (-1.48 %): the first ~80 ms of the window's first prefill
    drew idle power. They lie in the counter interval across the window's start; fitting only
    whole intervals left it out, the model extrapolated P_prefill into it (residual -1.5 %,
    prefill energy +20 %, decode -1.5 % after the rescale). Fitted, the misfit is a note."""
    w = traced_window(seed, head_idle_s=0.08)
    rep = phase_energy_report(w.intervals, w.spans, w.window)
    assert rep.not_measured is None
    assert rep.n_intervals == w.intervals.overlapping(*w.window).n  # the edge ones too
    assert abs(rep.residual_pct or 0.0) < 0.5
    err = _energy_errors_pct(rep, w.true_j)
    assert abs(err[PREFILL]) < 5.0 and abs(err[DECODE]) < 0.5, err
    assert any(n.startswith("counter interval 0.00 s into the window misfit") for n in rep.notes)
    per = per_request_energy(w.intervals, w.steps, w.window)
    assert per.not_measured is None and abs(per.residual_pct or 0.0) < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_traced_window_opened_on_a_prefill_splits_without_bias(seed: int) -> None:
    """Steady powers, the first prefill right after the window opens (an interval across
    each edge, as the session traces it): phases within 0.5 % of the truth, no misfit note."""
    w = traced_window(seed)
    rep = phase_energy_report(w.intervals, w.spans, w.window)
    assert rep.not_measured is None and abs(rep.residual_pct or 0.0) < 0.3
    err = _energy_errors_pct(rep, w.true_j)
    assert all(abs(v) < 0.5 for v in err.values()), err
    assert not any("misfit" in n for n in rep.notes)


def test_edge_rows_never_identify_what_the_whole_ones_cannot() -> None:
    x = np.column_stack([np.full(30, 0.03), np.full(30, 0.07)])  # collinear: lock-step
    x[0], x[-1] = (0.09, 0.0), (0.0, 0.02)  # two partial rows break the tie
    y = x @ np.array([600.0, 400.0])
    assert isinstance(fit_linear(x, y, ["a", "b"]), LinearFit)
    whole = np.ones(30, dtype=bool)
    whole[[0, -1]] = False
    fit = fit_linear(x, y, ["a", "b"], identify_rows=whole)
    assert isinstance(fit, NotIdentifiable) and "collinear" in fit.reason
    x[5] = (0.05, 0.05)  # identifiable from the whole rows: the fit uses every row
    fit2 = fit_linear(x, x @ np.array([600.0, 400.0]), ["a", "b"], identify_rows=whole)
    assert isinstance(fit2, LinearFit) and fit2.residuals.size == 30
    assert fit2.value("a") == pytest.approx(600.0)


def test_energy_inside_the_window_sums_to_the_counter_energy() -> None:
    dev = FakeDevice("GPU-a", power_w=200.0, counter_period_s=PERIOD_S, counter_phase_s=0.03)
    t = read_times(0, 1.0, 4.0)
    iv = counter_intervals(t, dev.energy_trace_mj(t))
    t0, t1 = 1.234, 3.21
    edge = iv.overlapping(t0, t1)
    assert edge.start_s[0] < t0 < edge.end_s[0] and edge.start_s[-1] < t1 < edge.end_s[-1]
    inside = edge.energy_inside_j(t0, t1)
    assert inside.sum() == pytest.approx(float(iv.cumulative_j(t1) - iv.cumulative_j(t0)))
    a, b = edge.clipped(t0, t1)
    at_50 = edge.energy_inside_j(t0, t1, outside_w=50.0)  # outside at 50 W, whole ones as is
    np.testing.assert_allclose(at_50, edge.energy_j - 50.0 * (edge.duration_s - (b - a)))
    capped = edge.energy_inside_j(t0, t1, outside_w=1e4)  # at most the interval's mean power
    np.testing.assert_allclose(capped, inside)


def test_fine_signal_estimate_agrees_on_a_clean_trace() -> None:
    spans = static_batches(2)
    dev = device_for(spans, 2, noise_w=0.0)
    window = window_of(spans)
    t = np.arange(window[0] - 0.1, window[1] + 0.1, 0.001)
    power = np.array([nvml_like_power(dev, x) for x in t])
    reg = phase_energy_report(trace_intervals(dev, 2, window), spans, window)
    fine = fine_signal_estimate(t, power, spans, window, counter_energy_j=reg.counter_energy_j)
    assert fine.not_measured is None and abs(fine.vs_counter_pct or 0.0) < 0.5
    for phase, watts in TRUE_W.items():
        f = fine.phases[phase].power_w
        r = reg.phases[phase].power_w
        assert f is not None and r is not None
        assert f.value == pytest.approx(watts, rel=0.02)
        assert (r.ci_low or 0) <= f.value <= (r.ci_high or 0)


def nvml_like_power(dev: FakeDevice, t: float) -> float:
    """What the fake's NVML_FI_DEV_POWER_INSTANT returns at elapsed time ``t``."""
    fake = FakeNVML([dev], clock=lambda: t)
    fake.t0_s = 0.0
    with fake.installed():
        return nvml.power_instant_w(nvml.handle_by_index(0))


def test_fine_signal_that_misses_the_window_is_not_measured() -> None:
    spans = static_batches(2, duration_s=3.0)
    out = fine_signal_estimate([1.5, 2.0], [100.0, 100.0], spans, window_of(spans))
    assert out.not_measured and "cover" in out.not_measured


def test_reports_round_trip_through_json() -> None:
    rep = _report(1)
    assert PhaseEnergyReport.model_validate_json(rep.model_dump_json()) == rep


# --- per request --------------------------------------------------------------------------
def _cb_run(seed: int) -> tuple[list, PerRequestEnergy]:  # type: ignore[type-arg]
    steps = continuous_batching(seed)
    dev = device_for([StepSpan(s) for s in steps], seed, power=step_power_w, noise_w=10.0,
                     jitter_s=0.001)  # fmt: skip
    window = window_of(steps)
    return steps, per_request_energy(trace_intervals(dev, seed, window), steps, window)


def test_per_request_energies_sum_to_the_window_and_recover_the_coefficients() -> None:
    _steps, out = _cb_run(0)
    assert out.not_measured is None
    assert out.terms == ["prefill_tokens", "decode_tokens", "step_time", "gap_time"]
    assert out.sum_energy_j == pytest.approx(out.counter_energy_j, rel=1e-9)
    assert sum(r.energy_j for r in out.requests) == pytest.approx(out.counter_energy_j, rel=1e-9)
    truth = {"prefill_tokens (J/token)": A_J_PER_PREFILL, "decode_tokens (J/token)": B_J_PER_DECODE,
             "step_time (W)": C_STEP_W, "gap_time (W)": GAP_W}  # fmt: skip
    for name, value in truth.items():
        c = out.coefficients[name]
        assert (c.ci_low or 0) <= value <= (c.ci_high or 0), name
    assert abs(out.residual_pct or 0.0) < 1.0
    assert out.p50_j is not None and out.p99_j is not None and out.p50_j <= out.p99_j
    assert out.j_per_output_token_slope is not None and out.j_per_output_token_slope.value > 0
    assert sum(b.n_requests for b in out.j_vs_output_tokens) == out.n_requests


def test_per_request_energy_matches_the_sharing_rule_with_true_coefficients() -> None:
    steps, out = _cb_run(1)
    share = {r.request_id: r.time_share_s for r in out.requests}
    assert sum(share.values()) == pytest.approx(out.window_s, rel=1e-9)
    gap_s = out.window_s - sum(s.end_s - s.start_s for s in steps)
    busy_share: dict[str, float] = {}
    for s in steps:
        for rid in s.residents():
            busy_share[rid] = busy_share.get(rid, 0.0) + (s.end_s - s.start_s) / len(s.residents())
    total_busy = sum(busy_share.values())
    errors = []
    for r in out.requests:
        pre = sum(s.prefill_tokens.get(r.request_id, 0) for s in steps)
        dec = sum(s.decode_tokens.get(r.request_id, 0) for s in steps)
        b = busy_share[r.request_id]
        true_j = A_J_PER_PREFILL * pre + B_J_PER_DECODE * dec + C_STEP_W * b
        true_j += GAP_W * gap_s * b / total_busy  # one-token-per-step: resident ~ busy share
        errors.append((r.energy_j - true_j) / max(true_j, 1e-9))
    assert np.median(np.abs(errors)) < 0.1


def test_static_batches_from_token_timings_get_the_same_model() -> None:
    timings, t = [], 1.0
    rng = np.random.default_rng(0)
    for _batch in range(25):
        n_in = rng.integers(100, 500, 4)
        n_out = rng.integers(20, 64, 4)
        prefill_s = 0.02 + 1e-5 * n_in.sum()
        times = list(t + prefill_s + 0.012 * np.arange(int(n_out.max())))
        timings += [RequestTiming(t, times[: int(k)], int(i), int(k)) for i, k in zip(n_in, n_out, strict=True)]  # fmt: skip
        t = times[-1] + 0.01
    steps = static_batch_steps(timings)
    spans = static_batch_spans(timings)
    assert sum(sp.tokens for sp in spans if sp.phase == PREFILL) == sum(
        x.input_tokens for x in timings
    )
    dev = device_for([StepSpan(s) for s in steps], 0, power=step_power_w, noise_w=10.0)
    window = window_of(steps)
    iv = trace_intervals(dev, 0, window)
    out = per_request_energy(iv, steps, window,
                             output_tokens={f"r{i}": x.output_tokens for i, x in enumerate(timings)})  # fmt: skip
    assert out.not_measured is None, out.notes
    assert out.n_requests == len(timings)
    assert out.sum_energy_j == pytest.approx(out.counter_energy_j, rel=1e-9)
    phases = phase_energy_report(iv, spans, window)
    assert phases.not_measured is None


def test_per_request_without_steps_is_not_measured() -> None:
    dev = FakeDevice("GPU-a", power_w=200.0, counter_period_s=PERIOD_S)
    iv = trace_intervals(dev, 0, (1.0, 5.0))
    out = per_request_energy(iv, [], (1.0, 5.0))
    assert out.not_measured == "no engine steps in the window"


def test_power_schedule_from_spans_draws_the_phase_power() -> None:
    spans = [PhaseSpan(PREFILL, 1.0, 1.5), PhaseSpan(DECODE, 1.5, 3.0)]
    sched = power_schedule_from_spans(spans, POWER_W, OTHER_W)
    dev = FakeDevice("GPU-a", power_w=sched, counter_start_mj=0, counter_period_s=0.5)
    assert dev.energy_mj(4.0) == round((150.0 * 1.0 + 600 * 0.5 + 400 * 1.5 + 150 * 1.0) * 1000)
