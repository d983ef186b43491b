"""Energy per request, from the counter and the engine's step loop (continuous batching).

Model (docs/measurement.md): each counter interval's energy is

    E_k = a * prefill_tokens_k + b * decode_tokens_k + c * step_time_k + g * gap_time_k + e_k

where a step's tokens are spread evenly over the step's time, so an interval gets the share
of each step that falls in it; ``gap_time`` is the interval's time outside every step (host
work between steps, idle). ``a`` and ``b`` are J per prefill / decode token (marginal),
``c`` and ``g`` the power of running steps and of the gaps (W). Least squares gives them
with standard errors (``regression.fit_linear``), over every interval that holds part of the
window, as in ``phases.py`` (the two across its edges too: their time outside the window is
gap time; without a ``gap_time`` term, their part inside the window is fitted, their energy
split by time); the whole intervals must identify the model. When a model is not
identifiable (gaps too short to fit; a static batch decoding at a constant token rate makes
decode tokens and time collinear) the next of :data:`TERM_SETS` is tried (``time`` = step +
gap time); the result names the terms used and why fuller ones were dropped.

**Sharing rule.** A request's energy is a x its prefill tokens + b x its decode tokens +
its time share of the time terms: for every step, the step's duration divided equally among
the requests resident in it (scheduled, or holding a static-batch slot); the window's time
outside every step in proportion to the requests' resident time. The shares add up to the
window, so the requests' energies add up to the model's window energy; they are then
rescaled by one factor to sum to the window's counter energy (``residual_j`` says by how
much the model missed before that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from llenergymeasure.core.energy.intervals import CounterIntervals, Coverage
from llenergymeasure.core.energy.phases import PhaseSettings
from llenergymeasure.core.energy.regression import LinearFit, NotIdentifiable, fit_linear
from llenergymeasure.domain.phases import (
    Estimate,
    OutputLengthBin,
    PerRequestEnergy,
    RequestEnergy,
    StepTokens,
)

TERM_SETS = (
    ("prefill_tokens", "decode_tokens", "step_time", "gap_time"),
    ("prefill_tokens", "decode_tokens", "time"),
    ("prefill_tokens", "time"),
    ("decode_tokens", "time"),
    ("time",),
)
SHARING_RULE = (
    "a*prefill tokens + b*decode tokens + power x time share; time share = each step's "
    "duration split equally among its resident requests, plus window time outside steps in "
    "proportion to resident time; all rescaled by one factor to sum to the window's counter "
    "energy"
)
MIN_STEP_S = 1e-9
N_BINS = 10


def per_request_energy(
    intervals: CounterIntervals,
    steps: Sequence[StepTokens],
    window: tuple[float, float],
    *,
    window_energy_j: float | None = None,
    input_tokens: Mapping[str, int] | None = None,
    output_tokens: Mapping[str, int] | None = None,
    delay_s: float = 0.0,
    averaging_window_s: float = 0.0,
    settings: PhaseSettings = PhaseSettings(),
    keep_requests: bool = True,
) -> PerRequestEnergy:
    """Attribute the window's counter energy to requests (see the module docstring).

    Token counts per request default to the steps' sums (prefill -> input, decode -> output).
    """
    t0, t1 = window
    out = PerRequestEnergy(window_s=t1 - t0, resolution_s=intervals.period_s,
                           sharing_rule=SHARING_RULE)  # fmt: skip
    steps = [s for s in steps if s.end_s > t0 and s.start_s < t1]
    if not steps or intervals.n == 0:
        out.not_measured = "no engine steps in the window" if intervals.n else "no counter steps"
        return out
    iv = intervals.shifted(-delay_s)
    fit_iv = iv.overlapping(t0, t1)  # with the two across the edges, as in phases.py
    whole = (fit_iv.start_s - averaging_window_s >= t0) & (fit_iv.end_s <= t1)
    out.n_intervals = fit_iv.n
    e_window = (
        float(window_energy_j)
        if window_energy_j is not None
        else float(iv.cumulative_j(t1) - iv.cumulative_j(t0))
    )
    out.counter_energy_j = e_window
    a, b = fit_iv.clipped(t0, t1)
    inside = _interval_columns(a, b, steps, averaging_window_s)
    full = _interval_columns(fit_iv.start_s, fit_iv.end_s, steps, averaging_window_s)
    fit = _first_identifiable((inside, fit_iv.energy_inside_j(t0, t1)), (full, fit_iv.energy_j),
                              whole, settings, out.notes)  # fmt: skip
    if isinstance(fit, NotIdentifiable):
        out.not_measured = f"per-request model not identifiable: {fit.reason}"
        return out
    z, ids = _request_design(steps, fit.names, t0, t1)
    _fill(out, fit, z, ids, e_window, steps, input_tokens, output_tokens, keep_requests)
    return out


def _interval_columns(
    start_s: np.ndarray, end_s: np.ndarray, steps: Sequence[StepTokens], window_s: float
) -> dict[str, np.ndarray]:
    """Prefill tokens, decode tokens and seconds in each interval [start, end]."""
    starts = np.array([s.start_s for s in steps])
    lens = np.maximum(np.array([s.end_s - s.start_s for s in steps]), MIN_STEP_S)
    duration = np.asarray(end_s - start_s, dtype=float)
    out = {"time": duration}
    for name in ("prefill_tokens", "decode_tokens"):
        tokens = np.array([float(sum(getattr(s, name).values())) for s in steps])
        cov = Coverage(starts, starts + lens, tokens / lens)
        out[name] = cov.integral(start_s, end_s, window_s=window_s)
    busy = Coverage(starts, starts + lens, np.ones(len(steps)))
    out["step_time"] = busy.integral(start_s, end_s, window_s=window_s)
    out["gap_time"] = np.maximum(duration - out["step_time"], 0.0)
    return out


def _first_identifiable(
    inside: tuple[dict[str, np.ndarray], np.ndarray],
    full: tuple[dict[str, np.ndarray], np.ndarray],
    whole: np.ndarray,
    settings: PhaseSettings,
    notes: list[str],
) -> LinearFit | NotIdentifiable:
    """Fit the fullest identifiable term set; notes say why fuller ones were dropped.

    Every interval is fitted; ``whole`` (those inside the window) must identify the model.
    The time outside the window in the two edge intervals is gap time: with ``gap_time`` a
    term they are fitted whole (``full``: columns and energy), else their part inside the
    window (``inside``: columns and energy, the edge intervals' split by time).
    """
    last: LinearFit | NotIdentifiable = NotIdentifiable("no term set tried")
    total = float(inside[0]["time"].sum())
    for terms in TERM_SETS:
        small = [t for t in terms if float(inside[0][t].sum()) <= _min_sum(t, total, settings)]
        if small:
            notes.append(f"{'+'.join(terms)}: too little {', '.join(small)} to fit")
            continue
        cols, y = full if "gap_time" in terms else inside
        last = fit_linear(
            np.column_stack([cols[t] for t in terms]), y, terms,
            min_rows=settings.min_intervals, max_condition=settings.max_condition,
            hac_lag=settings.hac_lag, level=settings.level, identify_rows=whole,
        )  # fmt: skip
        if isinstance(last, LinearFit):
            return last
        notes.append(f"{'+'.join(terms)}: {last.reason}")
        if "too few" in last.reason:
            return last
    return last


def _min_sum(term: str, total_s: float, settings: PhaseSettings) -> float:
    """Below this column sum a term is not fitted (gap time: a share of the window)."""
    return settings.min_phase_share * total_s if term == "gap_time" else 0.0


def _request_design(
    steps: Sequence[StepTokens], terms: Sequence[str], t0: float, t1: float
) -> tuple[np.ndarray, list[str]]:
    """Per request (rows, in first-seen order): its prefill tokens, decode tokens, time share."""
    prefill: dict[str, float] = {}
    decode: dict[str, float] = {}
    share: dict[str, float] = {}  # of step time
    resident: dict[str, float] = {}
    busy = 0.0
    for s in steps:
        length = max(0.0, min(s.end_s, t1) - max(s.start_s, t0))
        full = max(s.end_s - s.start_s, MIN_STEP_S)
        frac = min(1.0, length / full) if s.end_s > s.start_s else 1.0
        for rid, n in s.prefill_tokens.items():
            prefill[rid] = prefill.get(rid, 0.0) + n * frac
        for rid, n in s.decode_tokens.items():
            decode[rid] = decode.get(rid, 0.0) + n * frac
        who = s.residents()
        busy += length
        for rid in who:
            share[rid] = share.get(rid, 0.0) + length / len(who)
            resident[rid] = resident.get(rid, 0.0) + length
    ids = list(dict.fromkeys([*share, *prefill, *decode]))
    gap = max(0.0, (t1 - t0) - busy)
    total_resident = sum(resident.values())
    gap_share = {
        rid: gap * (resident.get(rid, 0.0) / total_resident if total_resident else 1 / len(ids))
        for rid in ids
    }
    both = {rid: share.get(rid, 0.0) + gap_share[rid] for rid in ids}
    column = {"prefill_tokens": prefill, "decode_tokens": decode, "step_time": share,
              "gap_time": gap_share, "time": both}  # fmt: skip
    z = np.array([[column[t].get(rid, 0.0) for t in terms] for rid in ids]).reshape(len(ids), -1)
    return z, ids


def _fill(
    out: PerRequestEnergy,
    fit: LinearFit,
    z: np.ndarray,
    ids: list[str],
    e_window: float,
    steps: Sequence[StepTokens],
    input_tokens: Mapping[str, int] | None,
    output_tokens: Mapping[str, int] | None,
    keep_requests: bool,
) -> None:
    """Coefficients, rescaled per-request energies, their distribution and length trend."""
    out.terms = list(fit.names)
    out.se_method = fit.se_method
    units = {"prefill_tokens": "J/token", "decode_tokens": "J/token"}
    for name in fit.names:
        lo, hi = fit.ci_of(name)
        out.coefficients[f"{name} ({units.get(name, 'W')})"] = Estimate(
            value=fit.value(name), se=fit.se_of(name), ci_low=lo, ci_high=hi, level=fit.level
        )
    model = z @ fit.coef
    model_total = float(model.sum())
    factor = e_window / model_total if model_total > 0 else 1.0
    energy, se = model * factor, fit.combo_se(z) * factor
    out.residual_j = e_window - model_total
    out.residual_pct = 100.0 * out.residual_j / e_window if e_window else None
    out.sum_energy_j = float(energy.sum())
    out.n_requests = len(ids)
    n_in = input_tokens or _sum_tokens(steps, "prefill_tokens")
    n_out = output_tokens or _sum_tokens(steps, "decode_tokens")
    lengths = np.array([int(n_out.get(rid, 0)) for rid in ids])
    out.mean_j = float(energy.mean())
    out.p50_j, out.p99_j = (float(v) for v in np.percentile(energy, [50, 99]))
    out.j_vs_output_tokens = _length_bins(lengths, energy)
    out.j_per_output_token_slope = _slope(lengths, energy, fit.level)
    if np.any(energy < 0):
        out.notes.append("some requests got negative energy: a coefficient's CI includes < 0")
    time_cols = [i for i, n in enumerate(fit.names) if "time" in n]
    if keep_requests:
        out.requests = [
            RequestEnergy(
                request_id=rid,
                input_tokens=int(n_in.get(rid, 0)),
                output_tokens=int(lengths[i]),
                energy_j=float(energy[i]),
                se_j=float(se[i]),
                time_share_s=float(z[i, time_cols].sum()),
            )
            for i, rid in enumerate(ids)
        ]


def _sum_tokens(steps: Sequence[StepTokens], attr: str) -> dict[str, int]:
    """Tokens per request summed over steps."""
    out: dict[str, int] = {}
    for s in steps:
        for rid, n in getattr(s, attr).items():
            out[rid] = out.get(rid, 0) + int(n)
    return out


def _length_bins(lengths: np.ndarray, energy: np.ndarray) -> list[OutputLengthBin]:
    """Mean J per request by output length: one bin per length, or up to 10 quantile bins."""
    distinct = np.unique(lengths)
    if distinct.size <= N_BINS:
        groups = [lengths == v for v in distinct]
    else:
        cuts = np.quantile(lengths, np.linspace(0.0, 1.0, N_BINS + 1))[1:-1]
        idx = np.searchsorted(cuts, lengths, side="right")
        groups = [idx == i for i in np.unique(idx)]
    return [
        OutputLengthBin(
            output_tokens_low=int(lengths[m].min()),
            output_tokens_high=int(lengths[m].max()),
            n_requests=int(m.sum()),
            mean_energy_j=float(energy[m].mean()),
        )
        for m in groups
    ]


def _slope(lengths: np.ndarray, energy: np.ndarray, level: float) -> Estimate | None:
    """J per extra output token across requests (least squares line), None if one length."""
    if np.unique(lengths).size < 2 or lengths.size < 3:
        return None
    x = np.column_stack([np.ones(lengths.size), lengths.astype(float)])
    fit = fit_linear(x, energy, ("intercept", "slope"), min_rows=3, max_condition=1e12,
                     hac_lag=0, level=level)  # fmt: skip
    if isinstance(fit, NotIdentifiable):
        return None
    lo, hi = fit.ci_of("slope")
    return Estimate(value=fit.value("slope"), se=fit.se_of("slope"), ci_low=lo, ci_high=hi,
                    level=level)  # fmt: skip
