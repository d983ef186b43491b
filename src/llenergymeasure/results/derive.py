"""Metrics, quality flags and CO2 derived from one experiment's raw measurements.

Shared by the in-process orchestrator and the late aggregation of multi-process runs, so a
single-process result and an aggregated one are computed by the same code. Pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence

from llenergymeasure.core.metrics import (
    RequestTiming,
    TransformerShape,
    co2_estimate,
    energy_ratios,
    estimate_flops,
    latency_from_timings,
    throughput,
    token_counts,
)
from llenergymeasure.domain.co2 import CO2Estimate
from llenergymeasure.domain.energy import EnergyReport, QualityFlag, Severity
from llenergymeasure.domain.metrics import InferenceMetrics, MemoryMetrics
from llenergymeasure.domain.results import RequestTimingRecord

#: Windows shorter than this give noisy energy (power sensors sample part of the time).
SHORT_WINDOW_S = 10.0
#: Windows shorter than this are close to the NVML counter's ~100 ms update period.
VERY_SHORT_WINDOW_S = 1.0
#: Fewer requests than this make latency percentiles unreliable.
LOW_REQUEST_COUNT = 10


def to_timings(records: Sequence[RequestTimingRecord]) -> list[RequestTiming]:
    """Records (serialised) back to ``RequestTiming`` objects."""
    return [
        RequestTiming(
            request_start_s=r.request_start_s,
            token_times_s=list(r.token_times_s),
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            queue_s=r.queue_s,
        )
        for r in records
    ]


def to_records(timings: Sequence[RequestTiming]) -> list[RequestTimingRecord]:
    """``RequestTiming`` objects to serialisable records."""
    return [
        RequestTimingRecord(
            request_start_s=t.request_start_s,
            token_times_s=list(t.token_times_s),
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            queue_s=t.queue_s,
        )
        for t in timings
    ]


def energy_basis(energy: EnergyReport | None) -> tuple[float | None, str]:
    """(joules, label) used for energy ratios: GPU energy, else the CPU/DRAM total."""
    if energy is None:
        return None, "not measured"
    if energy.gpu_energy_j is not None:
        methods = sorted({m.method for m in energy.measurements if m.scope == "gpu"})
        return energy.gpu_energy_j, f"gpu gross {'+'.join(methods) or 'measured'}"
    total = energy.total_energy_j
    if total is None:
        return None, "not measured"
    scopes = sorted({m.scope for m in energy.measurements if m.scope != "gpu"})
    methods = sorted({m.method for m in energy.measurements if m.scope != "gpu"})
    return total, f"{'+'.join(scopes) or 'host'} gross {'+'.join(methods) or 'measured'}"


def build_metrics(
    timings: Sequence[RequestTiming],
    duration_s: float,
    energy: EnergyReport | None,
    arch: TransformerShape | None,
    memory: MemoryMetrics | None,
) -> InferenceMetrics:
    """All inference metrics of one window (late aggregation over ``timings``)."""
    tokens = token_counts([t.input_tokens for t in timings], [t.output_tokens for t in timings])
    energy_j, basis = energy_basis(energy)
    above = energy.baseline.energy_above_idle_j if energy and energy.baseline else None
    flops = None
    if arch is not None and timings:
        flops = estimate_flops(
            arch,
            [t.input_tokens for t in timings],
            [t.output_tokens for t in timings],
            duration_s=duration_s,
        )
    return InferenceMetrics(
        tokens=tokens,
        throughput=throughput(tokens, duration_s),
        latency=latency_from_timings(timings),
        energy_ratios=energy_ratios(energy_j, tokens, basis),
        energy_ratios_above_idle=energy_ratios(above, tokens, "gpu above idle"),
        flops=flops,
        memory=memory,
    )


def quality_flags(
    metrics: InferenceMetrics,
    energy: EnergyReport | None,
    energy_not_measured_reason: str | None,
    ttft_not_measured_reason: str | None = None,
) -> list[QualityFlag]:
    """Reasons to trust this result less (window, samples, energy coverage, latency)."""
    flags = _energy_flags(energy, energy_not_measured_reason)
    window_s = metrics.throughput.duration_s
    # the energy layer's short_window flag (relative to the counter period) is more specific
    if not any(f.code == "short_window" for f in flags):
        flags += _window_flags(window_s)
    if metrics.tokens.n_requests < LOW_REQUEST_COUNT:
        flags.append(
            _flag(
                "low_request_count",
                f"only {metrics.tokens.n_requests} requests (< {LOW_REQUEST_COUNT}): latency "
                "percentiles are unreliable",
            )
        )
    if metrics.latency.ttft is None:
        why = ttft_not_measured_reason or "the backend gave no per-token times"
        flags.append(_flag("latency_not_measured", f"TTFT/ITL not measured: {why}", "info"))
    return flags


def _window_flags(window_s: float) -> list[QualityFlag]:
    """Short-window flags when the energy layer gave none (no counter, or not measured)."""
    if window_s < VERY_SHORT_WINDOW_S:
        message = (
            f"measurement window {window_s:.3f} s < {VERY_SHORT_WINDOW_S:.0f} s: energy "
            "counters update every ~100 ms; use more prompts"
        )
        return [_flag("short_window", message, "critical")]
    if window_s < SHORT_WINDOW_S:
        message = f"measurement window {window_s:.1f} s < {SHORT_WINDOW_S:.0f} s: energy is noisy; use more prompts"
        return [_flag("short_window", message)]
    return []


def _energy_flags(energy: EnergyReport | None, reason: str | None) -> list[QualityFlag]:
    """Flags about energy coverage: not measured, estimates, and the energy layer's own."""
    if energy is None:
        return [_flag("energy_not_measured", f"energy not measured: {reason or 'no meter'}")]
    flags = list(energy.warnings)
    if energy.total_energy_j is None:
        flags.append(
            _flag(
                "energy_not_measured",
                "no energy scope could be measured: "
                + "; ".join(f"{k}: {v}" for k, v in energy.not_measured.items()),
            )
        )
    if any(m.method == "estimate" for m in energy.measurements) and not any(
        f.code == "estimate_used" for f in flags
    ):
        flags.append(
            _flag(
                "estimate_used",
                "part of the energy is a labelled estimate, "
                "not a measurement (see energy.measurements[].method)",
            )
        )
    return flags


def _flag(code: str, message: str, severity: Severity = "warning") -> QualityFlag:
    return QualityFlag(code=code, message=message, severity=severity)


def estimate_co2(
    energy: EnergyReport | None, carbon_intensity_gco2_kwh: float | None, pue: float | None
) -> CO2Estimate | None:
    """CO2 estimate from all measured energy; None without energy or carbon intensity."""
    total = energy.total_energy_j if energy is not None else None
    if total is None or carbon_intensity_gco2_kwh is None:
        return None
    return co2_estimate(total, carbon_intensity_gco2_kwh, pue if pue is not None else 1.0)
