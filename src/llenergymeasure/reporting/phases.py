"""Energy by phase and per request of a result: the one reader of ``energy.phases`` and
``energy.per_request`` (docs/measurement.md section 14), for the HTML report, the export
columns and ``llem run``'s summary.

Every figure comes with how it was obtained (method, signal, resolution, CI); a result
without a measured attribution gives the reason instead (:func:`phases_not_measured`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llenergymeasure.domain.phases import Estimate, PerRequestEnergy, PhaseEnergyReport
    from llenergymeasure.domain.results import ExperimentResult

NOT_MEASURED = "not measured: this result has no phase attribution"
TOKEN_WORD = {"prefill": "prompt token", "decode": "decode token"}
SIGNAL_TEXT = {"energy_counter": "energy counter", "power_instant": "instantaneous power",
               "power_usage": "power usage"}  # fmt: skip


@dataclass(frozen=True)
class PhaseEnergy:
    """Energy attributed to one phase of the window (prefill, decode, mixed, other)."""

    phase: str
    energy_j: float
    method: str | None = None
    ci_low_j: float | None = None
    ci_high_j: float | None = None
    power_w: float | None = None
    tokens: int | None = None
    j_per_token: float | None = None
    j_per_token_ci: tuple[float, float] | None = None


def _report(result: ExperimentResult) -> PhaseEnergyReport | None:
    return result.energy.phases if result.energy is not None else None


def phase_energy(result: ExperimentResult) -> list[PhaseEnergy] | None:
    """The result's measured energy per phase, or None when it has none."""
    rep = _report(result)
    if rep is None or rep.not_measured is not None:
        return None
    out = []
    for name, pe in rep.phases.items():
        e = pe.energy_j
        if e is None or pe.not_measured is not None:
            continue
        jt = pe.j_per_token
        out.append(
            PhaseEnergy(
                phase=name, energy_j=e.value, method=rep.method, ci_low_j=e.ci_low,
                ci_high_j=e.ci_high, power_w=pe.power_w.value if pe.power_w else None,
                tokens=pe.tokens, j_per_token=jt.value if jt else None,
                j_per_token_ci=_ci(jt) if jt else None,
            )
        )  # fmt: skip
    return out or None


def phases_not_measured(result: ExperimentResult) -> str | None:
    """Why the result has no energy by phase (None when it has one)."""
    if phase_energy(result) is not None:
        return None
    rep = _report(result)
    if rep is not None and rep.not_measured:
        return f"not measured: {rep.not_measured}"
    if result.energy is None:
        return "not measured: no energy measured"
    return NOT_MEASURED


def method_text(rep: PhaseEnergyReport) -> str:
    """Method, signal, resolution, fit quality and sensor profile in one line."""
    parts = [rep.method.replace("_", " ")]
    res = f" at {rep.resolution_s * 1e3:.1f} ms" if rep.resolution_s else ""
    parts.append(f"{SIGNAL_TEXT.get(rep.signal, rep.signal)}{res}")
    if rep.residual_pct is not None:
        parts.append(f"model vs counter {rep.residual_pct:+.2f} %")
    parts.append(f"{rep.n_intervals} intervals")
    if rep.trace is not None and rep.trace.mean_interval_s:
        parts.append(f"trace read every {rep.trace.mean_interval_s * 1e3:.1f} ms")
    if rep.sensor_profile:
        parts.append(f"profile {rep.sensor_profile!r}")
    level = next((pe.power_w.level for pe in rep.phases.values() if pe.power_w), 0.95)
    parts.append(f"[{round(level * 100)} % CI]")
    return ", ".join(parts)


def summary_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """``llem run``'s lines: energy per phase, J/token (95 % CI), method; J per request."""
    phases = phase_energy(result)
    rep = _report(result)
    if phases is None or rep is None:
        return [("energy by phase", phases_not_measured(result) or NOT_MEASURED)]
    pairs = []
    for p in phases:
        text = f"{p.energy_j:.4g} J{_ci_text(p.ci_low_j, p.ci_high_j)}"
        if p.j_per_token is not None:
            lo, hi = p.j_per_token_ci or (None, None)
            unit = TOKEN_WORD.get(p.phase, "token")
            text += f", {p.j_per_token * 1e3:.4g} mJ/{unit}{_ci_text(_m(lo), _m(hi))}"
        if p.power_w is not None:
            text += f" ({p.power_w:.0f} W)"
        pairs.append((f"{p.phase} energy", text))
    pairs.append(("phase method", method_text(rep)))
    fine = rep.fine_signal
    if fine is not None and fine.not_measured is None and fine.phases:
        shares = ", ".join(
            f"{k} {v.energy_j.value:.4g} J" for k, v in fine.phases.items() if v.energy_j
        )
        vs = f" (total vs counter {fine.vs_counter_pct:+.2f} %)" if fine.vs_counter_pct else ""
        pairs.append((f"phases by {SIGNAL_TEXT.get(fine.signal, fine.signal)}", shares + vs))
    per = result.energy.per_request if result.energy is not None else None
    pairs.append(("energy / request", per_request_text(per)))
    return pairs


def per_request_text(per: PerRequestEnergy | None) -> str:
    """Mean, p50, p99 J per request and how it was obtained, or why not."""
    if per is None:
        return NOT_MEASURED
    if per.not_measured is not None or per.mean_j is None:
        return f"not measured: {per.not_measured or 'no requests'}"
    slope = per.j_per_output_token_slope
    trend = (
        f"; {slope.value * 1e3:.4g} mJ per extra output token"
        + _ci_text(_m(slope.ci_low), _m(slope.ci_high))
        if slope is not None
        else ""
    )
    return (
        f"mean {per.mean_j:.4g} J, p50 {_g(per.p50_j)} J, p99 {_g(per.p99_j)} J over "
        f"{per.n_requests} requests ({' + '.join(per.terms)} regression){trend}"
    )


def _ci(e: Estimate) -> tuple[float, float] | None:
    return (e.ci_low, e.ci_high) if e.ci_low is not None and e.ci_high is not None else None


def _ci_text(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return ""
    return f" [{lo:.4g}, {hi:.4g}]"


def _m(value: float | None) -> float | None:
    return None if value is None else value * 1e3


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
