"""Energy by phase: prefill, decode and other, attributed from the counter itself.

The NVML counter steps every ~100 ms (docs/measurement.md section 2), coarser than one
prefill, so energy is attributed statistically over a window, not per event:

1. **Counter regression** (:func:`phase_energy_report`, the primary estimate). Each counter
   interval k (``intervals.counter_intervals``) is modelled as

       E_k = P_prefill * t_prefill,k + P_decode * t_decode,k + P_other * t_other,k + e_k

   with the phase times from the backends' step timestamps (seen through the sensor's
   delay and averaging window, from its profile). Least squares over every interval that
   holds part of the window gives each phase's mean power with a standard error
   (``regression.fit_linear``); only the whole intervals must identify the model. The two
   intervals across the window's edges are fitted too: left out, the window's first ~100 ms
   (its first step, right after it opens) would be missing from the fit, and the window's
   residual would be nothing but the model's extrapolation into them. Their time outside
   the window has no span, so it is ``other`` time: where ``other`` has a power of its own
   the edge intervals are fitted whole; where it is folded into another phase, their part
   inside the window is, with their energy less their time outside at that phase's power
   (at most the interval's mean power: the device idles outside the window, and idle is
   the least it draws). Phase energy = power x the phase's time in the window; the model's sum is
   compared with the window's counter energy (``residual_j``) and the phases are then
   rescaled, all by the same factor, to sum to it exactly. Phase times sum to each
   interval's length, so least squares leaves residuals that sum to ~0 over the fitted
   intervals: ``residual_j`` is small by construction, and an interval that the model
   misses on its own is said in a note (:func:`misfit_note`).
2. **Fine signal** (:func:`fine_signal_estimate`, where the sensor profile trusts a fast
   power signal): the signal integrated over each phase's spans.

Assumptions (stated in the result's notes): each phase draws a steady mean power over the
window (variation around it is noise, not signal); the counter's energy between two steps
is the energy drawn between them (after the profiled delay); time outside the window is
``other`` time (the session syncs the device before it opens and after it closes); phase
times are exact on the counter's clock. The CI covers noise under that model, not a wrong model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from llenergymeasure.core.energy.intervals import (
    CounterIntervals,
    Coverage,
    phase_coverages,
    phase_times,
)
from llenergymeasure.core.energy.regression import LinearFit, NotIdentifiable, fit_linear
from llenergymeasure.domain.phases import (
    OTHER,
    PHASES,
    Estimate,
    FineSignalEstimate,
    PhaseEnergy,
    PhaseEnergyReport,
    PhaseSpan,
    Signal,
)

MISFIT_RATIO = 4.0  # misfit_note: |residual| over this x the other intervals' rms
MISFIT_SHARE = 0.1  # and over this share of the interval's energy
ASSUMPTIONS = (
    "each phase draws a steady mean power over the window; the counter's energy between two "
    "steps is the energy drawn between them (after the profiled delay); CI covers noise "
    "under this model only"
)


@dataclasses.dataclass(frozen=True)
class PhaseSettings:
    """Thresholds for the phase regression (defaults: docs/measurement.md)."""

    min_intervals: int = 20
    min_window_s: float = 2.0
    max_condition: float = 1e3
    hac_lag: int = 2
    level: float = 0.95
    min_phase_share: float = 0.005  # below this share of fitted time a phase is folded


def phase_energy_report(
    intervals: CounterIntervals,
    spans: Sequence[PhaseSpan],
    window: tuple[float, float],
    *,
    window_energy_j: float | None = None,
    tokens_by_phase: Mapping[str, int] | None = None,
    delay_s: float = 0.0,
    averaging_window_s: float = 0.0,
    settings: PhaseSettings = PhaseSettings(),
    sensor_profile: str | None = None,
) -> PhaseEnergyReport:
    """Split the window's counter energy into phases (see the module docstring).

    ``window_energy_j``: the window's energy to sum to (default: from the trace itself,
    interpolated within the edge intervals); ``tokens_by_phase`` default: the spans' tokens.
    """
    t0, t1 = window
    iv = intervals.shifted(-delay_s)
    covs = phase_coverages(spans)
    report = PhaseEnergyReport(
        window_s=t1 - t0,
        resolution_s=intervals.period_s,
        delay_s=delay_s,
        averaging_window_s=averaging_window_s,
        edge_model=intervals.edge_model,
        sensor_profile=sensor_profile,
        notes=[ASSUMPTIONS],
    )
    if intervals.n == 0:
        report.not_measured = "no counter steps in the trace"
        return report
    fit_iv = iv.overlapping(t0, t1)  # the two across the window's edges too (docstring)
    whole = (fit_iv.start_s - averaging_window_s >= t0) & (fit_iv.end_s <= t1)
    report.n_intervals = fit_iv.n
    e_window = _window_energy(iv, t0, t1, window_energy_j)
    report.counter_energy_j = e_window
    span = float(fit_iv.duration_s[whole].sum())
    if span < settings.min_window_s:
        report.not_measured = (
            f"window too short: {span:.2f} s of whole counter intervals < {settings.min_window_s} s"
        )
        return report
    a, b = fit_iv.clipped(t0, t1)
    times = phase_times(a, b, covs, window_s=averaging_window_s)  # the part inside the window
    in_window = {p: float(c.c(t1) - c.c(t0)) for p, c in covs.items()}
    in_window[OTHER] = max(0.0, (t1 - t0) - sum(in_window.values()))
    fitted, folded = _choose_terms(times, settings.min_phase_share)
    y = fit_iv.energy_inside_j(t0, t1)
    if OTHER in fitted:  # outside the window is other time (no span): the edge ones whole
        times = phase_times(fit_iv.start_s, fit_iv.end_s, covs, window_s=averaging_window_s)
        y = fit_iv.energy_j
    x = np.column_stack([sum(times[p] for p in folded.get(f, [f])) for f in fitted])

    def fit_to(y: np.ndarray) -> LinearFit | NotIdentifiable:
        return fit_linear(
            x, y, fitted, min_rows=settings.min_intervals, max_condition=settings.max_condition,
            hac_lag=settings.hac_lag, level=settings.level, identify_rows=whole,
        )  # fmt: skip

    fit = fit_to(y)
    host = next((f for f, ps in folded.items() if OTHER in ps and f != OTHER), None)
    if isinstance(fit, LinearFit) and host is not None:  # other folded: outside at its power
        y = fit_iv.energy_inside_j(t0, t1, outside_w=fit.value(host))
        fit = fit_to(y)
    if isinstance(fit, NotIdentifiable):
        report.not_measured = f"phase split not identifiable: {fit.reason}"
        return report
    tokens = dict(tokens_by_phase) if tokens_by_phase is not None else _span_tokens(spans)
    _fill(report, fit, folded, in_window, tokens, e_window)
    report.interval_rms_j = float(np.sqrt(np.mean(fit.residuals**2)))
    if note := misfit_note(fit.residuals, y, a - t0):
        report.notes.append(note)
    return report


def misfit_note(residuals: np.ndarray, energy_j: np.ndarray, at_s: np.ndarray) -> str | None:
    """A note on the worst-fitted counter interval, when it stands out from the rest.

    The window's residual cannot show a misfit that the fit has absorbed (phase times sum to
    each interval's length, so least squares leaves residuals that sum to ~0), so a lone
    interval that the model misses (a step far from its phase's mean power: the window's
    first prefill drawing a fraction of it, say) is said here: its |residual| over
    ``MISFIT_RATIO`` x the other intervals' rms and over ``MISFIT_SHARE`` of its energy.
    """
    if residuals.size < 3:
        return None
    k = int(np.argmax(np.abs(residuals)))
    r, e = float(residuals[k]), float(energy_j[k])
    rms = float(np.sqrt(np.mean(np.delete(residuals, k) ** 2)))
    if abs(r) <= MISFIT_RATIO * rms or abs(r) <= MISFIT_SHARE * abs(e):
        return None
    return (
        f"counter interval {at_s[k]:.2f} s into the window misfit: measured {e:.2f} J, model "
        f"{e - r:.2f} J ({abs(r) / max(rms, 1e-12):.0f}x the other intervals' rms of {rms:.2f} J)"
        ": a phase's power not steady there, or its phase times off"
    )


def _window_energy(iv: CounterIntervals, t0: float, t1: float, given: float | None) -> float:
    """The energy the phases must sum to: given, or the trace's over [t0, t1]."""
    if given is not None:
        return float(given)
    return float(iv.cumulative_j(t1) - iv.cumulative_j(t0))


def _choose_terms(
    times: dict[str, np.ndarray], min_share: float
) -> tuple[list[str], dict[str, list[str]]]:
    """Phases fitted on their own, and which small phases are folded into which fitted one.

    A phase with no time is left out; one under ``min_share`` of the fitted time cannot be
    told apart from noise, so it is folded into the phase with most time (same power).
    """
    total = sum(float(v.sum()) for v in times.values())
    present = [p for p in _ordered(times) if float(times[p].sum()) > 0]
    big = [p for p in present if float(times[p].sum()) >= min_share * total]
    host = max(big or present, key=lambda p: float(times[p].sum()))
    big = big or [host]
    folded = {p: [p] for p in big}
    folded[host] = [host, *[p for p in present if p not in big]]
    return big, folded


def _ordered(d: Mapping[str, object]) -> list[str]:
    """Phase names in the standard order, then any others."""
    return [p for p in PHASES if p in d] + sorted(p for p in d if p not in PHASES)


def _span_tokens(spans: Sequence[PhaseSpan]) -> dict[str, int]:
    """Tokens per phase from the spans (phases without token counts are left out)."""
    out: dict[str, int] = {}
    for sp in spans:
        if sp.tokens:
            out[sp.phase] = out.get(sp.phase, 0) + sp.tokens
    return out


def _fill(
    report: PhaseEnergyReport,
    fit: LinearFit,
    folded: dict[str, list[str]],
    in_window: dict[str, float],
    tokens: dict[str, int],
    e_window: float,
) -> None:
    """Per-phase power, rescaled energy, J/token; residual and rescale factor."""
    host_of = {p: f for f, ps in folded.items() for p in ps}
    model_j = sum(fit.value(host_of[p]) * t for p, t in in_window.items() if p in host_of)
    factor = e_window / model_j if model_j > 0 else 1.0
    report.dof, report.condition_number, report.se_method = (
        fit.dof, fit.condition_number, fit.se_method,
    )  # fmt: skip
    report.model_energy_j = model_j
    report.residual_j = e_window - model_j
    report.residual_pct = 100.0 * report.residual_j / e_window if e_window else None
    report.rescale_factor = factor
    for phase in _ordered(in_window):
        duration = in_window[phase]
        if phase not in host_of:
            report.phases[phase] = PhaseEnergy(
                phase=phase, duration_s=duration, tokens=tokens.get(phase),
                not_measured=f"no {phase} time in the fitted counter intervals",
            )  # fmt: skip
            continue
        report.phases[phase] = _phase_energy(phase, duration, tokens.get(phase), fit, host_of)
        _scale(report.phases[phase], factor)


def _phase_energy(
    phase: str, duration_s: float, tokens: int | None, fit: LinearFit, host_of: dict[str, str]
) -> PhaseEnergy:
    """One phase's power (its own coefficient, or its host's when folded) and energy."""
    host = host_of[phase]
    value, se = fit.value(host), fit.se_of(host)
    lo, hi = fit.ci_of(host)
    out = PhaseEnergy(
        phase=phase,
        duration_s=duration_s,
        tokens=tokens,
        power_w=Estimate(value=value, se=se, ci_low=lo, ci_high=hi, level=fit.level),
    )
    if host != phase:
        out.notes.append(f"too little {phase} time to fit its power: taken equal to {host}'s")
    elif hi - lo > abs(value):
        out.notes.append("weakly identified: the CI is wider than the estimate")
    return out


def _scale(pe: PhaseEnergy, factor: float) -> None:
    """Energy = factor x power x duration (CI scaled alike), and J/token where tokens known."""
    p = pe.power_w
    assert p is not None
    k = factor * pe.duration_s
    pe.energy_j = _times(p, k)
    if pe.tokens:
        pe.j_per_token = _times(p, k / pe.tokens)


def _times(e: Estimate, k: float) -> Estimate:
    """An estimate multiplied by a positive constant."""
    return Estimate(
        value=e.value * k,
        se=None if e.se is None else e.se * k,
        ci_low=None if e.ci_low is None else e.ci_low * k,
        ci_high=None if e.ci_high is None else e.ci_high * k,
        level=e.level,
    )


# --- fine signal --------------------------------------------------------------------------
def fine_signal_estimate(
    t_s: Sequence[float] | np.ndarray,
    power_w: Sequence[float] | np.ndarray,
    spans: Sequence[PhaseSpan],
    window: tuple[float, float],
    *,
    signal: Signal = "power_instant",
    delay_s: float = 0.0,
    resolution_s: float | None = None,
    counter_energy_j: float | None = None,
    tokens_by_phase: Mapping[str, int] | None = None,
    level: float = 0.95,
) -> FineSignalEstimate:
    """Each phase's mean power from the samples taken in it, times the phase's time.

    A sample (shifted back by ``delay_s``) counts for the phase active at its time, weighted
    by the time to the midpoints with its neighbours. Integrating a reconstruction of the
    signal across phase edges instead would move energy from the higher-power phase to its
    neighbour by up to half a sample gap per edge. The SE of a phase's mean power is the
    spread of its spans' sample means (ratio estimator; spans as independent draws); it does
    not include the sensor's calibration or its averaging across edges (the sensor profile
    says whether the signal is fine enough: ``trusted_for_phases``).
    """
    t = np.asarray(t_s, dtype=float) - delay_s
    p = np.asarray(power_w, dtype=float)
    res = resolution_s if resolution_s is not None else _median_step(t)
    out = FineSignalEstimate(signal=signal, resolution_s=res, delay_s=delay_s)
    t0, t1 = window
    if t.size < 2 or t[0] > t0 or t[-1] < t1:
        out.not_measured = "the power signal does not cover the window"
        return out
    breaks = np.concatenate([[t[0]], (t[1:] + t[:-1]) / 2.0, [t[-1]]])
    weight = np.diff(breaks)
    cum = np.concatenate([[0.0], np.cumsum(p * weight)])
    tokens = dict(tokens_by_phase) if tokens_by_phase is not None else _span_tokens(spans)
    z = _z(level)
    for phase, (a, b) in _phase_span_arrays(spans, t0, t1).items():
        w_span, e_span = _per_span_sums(t, p * weight, weight, a, b)
        out.phases[phase] = _fine_phase(
            phase, float((b - a).sum()), w_span, e_span, tokens.get(phase), z, level
        )
    out.total_energy_j = float(np.interp(t1, breaks, cum) - np.interp(t0, breaks, cum))
    if counter_energy_j:
        out.vs_counter_pct = 100.0 * (out.total_energy_j - counter_energy_j) / counter_energy_j
    out.se_method = "span-to-span spread of sample means (ratio estimator), normal CI"
    return out


def _per_span_sums(
    t: np.ndarray, energy: np.ndarray, weight: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sample weight and weighted power summed per span [a_j, b_j) (sorted, disjoint)."""
    idx = np.searchsorted(a, t, side="right") - 1
    ok = (idx >= 0) & (t < b[np.clip(idx, 0, None)])
    w = np.bincount(idx[ok], weights=weight[ok], minlength=a.size)
    e = np.bincount(idx[ok], weights=energy[ok], minlength=a.size)
    has = w > 0
    return w[has], e[has]


def _median_step(t: np.ndarray) -> float:
    return float(np.median(np.diff(t))) if t.size > 1 else 0.0


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _phase_span_arrays(
    spans: Sequence[PhaseSpan], t0: float, t1: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Merged spans of each phase clipped to [t0, t1]; ``other`` = the gaps between them."""
    covs = phase_coverages(spans)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for phase, cov in covs.items():
        a = np.clip(cov.s + cov.origin, t0, t1)
        b = np.clip(cov.s + cov.origin + cov.len, t0, t1)
        keep = b > a
        out[phase] = (a[keep], b[keep])
    labelled = [(a, b) for a_s, b_s in out.values() for a, b in zip(a_s, b_s, strict=True)]
    union = Coverage.union(labelled) if labelled else None
    starts = [t0] if union is None else [t0, *(union.s + union.origin + union.len)]
    ends = [t1] if union is None else [*(union.s + union.origin), t1]
    gaps = [(a, b) for a, b in zip(starts, ends, strict=True) if b > a]
    if gaps:
        out[OTHER] = (np.array([g[0] for g in gaps]), np.array([g[1] for g in gaps]))
    return {p: out[p] for p in _ordered(out)}


def _fine_phase(
    phase: str,
    duration_s: float,
    w_span: np.ndarray,
    e_span: np.ndarray,
    tokens: int | None,
    z: float,
    level: float,
) -> PhaseEnergy:
    """Mean power (sample-weighted over the phase's spans), energy and J/token of one phase."""
    pe = PhaseEnergy(phase=phase, duration_s=duration_s, tokens=tokens)
    total_w = float(w_span.sum())
    if total_w <= 0:
        pe.not_measured = f"no power sample fell in a {phase} span"
        return pe
    mean_w = float(e_span.sum()) / total_w
    m = w_span.size
    se_w = None
    if m >= 2:
        dev = e_span - mean_w * w_span  # W_j (pi_j - mean)
        se_w = float(np.sqrt(m / (m - 1) * np.sum(dev**2)) / total_w)
    pe.power_w = Estimate(
        value=mean_w,
        se=se_w,
        ci_low=None if se_w is None else mean_w - z * se_w,
        ci_high=None if se_w is None else mean_w + z * se_w,
        level=level,
    )
    _scale(pe, 1.0)
    return pe
