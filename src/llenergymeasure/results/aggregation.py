"""Late aggregation: per-process raw results -> one ExperimentResult.

Samples are pooled, never averaged: request timings of every process go into one set before
any statistic is taken; tokens are summed; the window is the span from the earliest start
to the latest end; energy is summed over the distinct devices the processes measured (a
device seen by several processes — e.g. a shared CPU package — is counted once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llenergymeasure.catalogue.architectures import ArchitectureSpec
from llenergymeasure.core.energy.quality import merge_flags_by_code
from llenergymeasure.core.metrics import TransformerShape
from llenergymeasure.domain.energy import (
    BaselineAdjustment,
    EnergyMeasurement,
    EnergyReport,
    IdleBaseline,
    QualityFlag,
)
from llenergymeasure.domain.metrics import MemoryMetrics
from llenergymeasure.domain.results import ExperimentResult, RawProcessResult, core_fields
from llenergymeasure.exceptions import ExperimentError
from llenergymeasure.results.derive import build_metrics, estimate_co2, quality_flags, to_timings
from llenergymeasure.results.filenames import process_result_filename


def aggregate_process_results(
    raws: Sequence[RawProcessResult], *, arch: TransformerShape | None = None
) -> ExperimentResult:
    """Combine the raw results of all processes of one experiment (late aggregation).

    ``arch`` gives the FLOPs shapes; by default it is resolved from the config's model
    (catalogue name or local config.json) and FLOPs are left out when that fails.
    """
    raws = _check_consistent(raws)
    first = raws[0]
    if arch is None:
        arch = resolve_arch_quietly(str(first.config.get("model", "")))
    timings = [t for raw in raws for t in to_timings(raw.timings)]
    duration_s = _window_s(raws)
    energy = merge_energy_reports([r.energy for r in raws if r.energy is not None], duration_s)
    no_energy = None if energy else (first.energy_not_measured_reason or "no meter measured")
    metrics = build_metrics(timings, duration_s, energy, arch, _merge_memory(raws))
    # one flag per code; quality_flags lists the energy layer's flags before its own
    flags = merge_flags_by_code(
        [w for r in raws for w in r.warnings]
        + quality_flags(metrics, energy, no_energy, first.ttft_not_measured_reason)
    )
    ends = [r.ended_at for r in raws if r.ended_at is not None]
    merged = {
        **core_fields(first),
        "energy": energy,
        "energy_not_measured_reason": no_energy,
        "warnings": flags,
        "started_at": min(r.started_at for r in raws),
        "ended_at": max(ends) if ends else None,
    }
    return ExperimentResult(
        **merged,
        metrics=metrics,
        co2=estimate_co2(energy, first.carbon_intensity_gco2_kwh, first.datacenter_pue),
        timing_method=first.timing_method,
        backend_details=dict(first.backend_details),
        batch_durations_s=[d for r in raws for d in r.batch_durations_s],
        n_processes=len(raws),
        measurement_window_s=duration_s,
    )


def aggregate_run_dir(run_dir: Path) -> tuple[ExperimentResult, Path]:
    """Aggregate the ``process_<i>.json`` files of a run and write its ``result.json``."""
    from llenergymeasure.results.persistence import read_process_results, write_result

    raws = read_process_results(run_dir)
    result = aggregate_process_results(raws)
    names = [process_result_filename(r.process_index) for r in raws]
    result = result.model_copy(update={"process_results": names, "run_dir": str(run_dir)})
    return result, write_result(result, run_dir)


def _check_consistent(raws: Sequence[RawProcessResult]) -> list[RawProcessResult]:
    """Sorted by process index; all from one experiment, each process exactly once."""
    if not raws:
        raise ExperimentError("no process results to aggregate")
    ordered = sorted(raws, key=lambda r: r.process_index)
    ids = {r.experiment_id for r in ordered}
    hashes = {r.config_hash for r in ordered}
    if len(ids) > 1 or len(hashes) > 1:
        raise ExperimentError(f"process results from different experiments: {sorted(ids)}")
    indices = [r.process_index for r in ordered]
    expected = ordered[0].n_processes
    if len(set(indices)) != len(indices) or len(ordered) != expected:
        raise ExperimentError(
            f"expected {expected} distinct process results, got indices {indices}: "
            "a process crashed or wrote twice"
        )
    return ordered


def _window_s(raws: Sequence[RawProcessResult]) -> float:
    """Span from the earliest window start to the latest end (single process: its own)."""
    if len(raws) == 1:
        return raws[0].duration_s
    span = max(r.window_end_unix_s for r in raws) - min(r.window_start_unix_s for r in raws)
    return max(span, max(r.duration_s for r in raws))


def resolve_arch_quietly(model: str) -> ArchitectureSpec | None:
    """Catalogue/local-config shapes for FLOPs, or None (e.g. a Hub id)."""
    from llenergymeasure.catalogue.architectures import resolve_architecture

    with contextlib.suppress(Exception):
        return resolve_architecture(model)
    return None


def _merge_memory(raws: Sequence[RawProcessResult]) -> MemoryMetrics | None:
    """Largest per-process memory figures (each process holds its own model replica)."""
    mems = [r.memory for r in raws if r.memory is not None]
    if len(mems) <= 1:
        return mems[0] if mems else None

    def peak(attr: str) -> float | None:
        values = [getattr(m, attr) for m in mems if getattr(m, attr) is not None]
        return max(values) if values else None

    devices = sorted({m.device for m in mems if m.device})
    first = mems[0]
    return MemoryMetrics(
        model_memory_mb=peak("model_memory_mb"),
        model_memory_method=first.model_memory_method,
        peak_memory_mb=peak("peak_memory_mb"),
        peak_memory_method=first.peak_memory_method,
        peak_memory_not_measured=first.peak_memory_not_measured,
        kv_cache_estimate_mb=peak("kv_cache_estimate_mb"),
        kv_cache_reserved_mb=peak("kv_cache_reserved_mb"),
        kv_cache_reserved_method=first.kv_cache_reserved_method,
        device=",".join(devices) or None,
    )


# ---- energy ---------------------------------------------------------------------------
def merge_energy_reports(reports: Sequence[EnergyReport], duration_s: float) -> EnergyReport | None:
    """One report over several processes: per scope, energy summed over distinct devices.

    A single report is returned unchanged. A device measured by more than one process keeps
    its largest reading (counted once) and a ``device_measured_twice`` flag is added.
    """
    if len(reports) <= 1:
        return reports[0] if reports else None
    measurements, flags = _merge_measurements(reports, duration_s)
    totals = {scope: _scope_total(measurements, scope) for scope in ("gpu", "cpu_package", "dram")}
    not_measured: dict[str, str] = {}
    for r in reports:
        not_measured.update({k: v for k, v in r.not_measured.items() if totals.get(k) is None})
    polled = [r.polled_gpu_energy_j for r in reports]
    polled_j = (
        sum(p for p in polled if p is not None) if all(p is not None for p in polled) else None
    )
    gpu_j = totals["gpu"]
    return EnergyReport(
        window=reports[0].window,
        duration_s=duration_s,
        measurements=measurements,
        gpu_energy_j=gpu_j,
        cpu_energy_j=totals["cpu_package"],
        dram_energy_j=totals["dram"],
        not_measured=not_measured,
        baseline=_merge_baselines([r.baseline for r in reports]),
        polled_gpu_energy_j=polled_j,
        polled_gpu_energy_j_by_device=_union(r.polled_gpu_energy_j_by_device for r in reports),
        counter_vs_polled_pct=100.0 * (polled_j - gpu_j) / gpu_j if polled_j and gpu_j else None,
        thermal=max(
            (r.thermal for r in reports if r.thermal is not None),
            key=lambda t: t.max_temperature_c or float("-inf"),
            default=None,
        ),
        meter_selection=reports[0].meter_selection,
        gpu_update_period_ms_by_device=_union(r.gpu_update_period_ms_by_device for r in reports),
        warnings=merge_flags_by_code([w for r in reports for w in r.warnings] + flags),
    )


def _merge_measurements(
    reports: Sequence[EnergyReport], duration_s: float
) -> tuple[list[EnergyMeasurement], list[QualityFlag]]:
    """Group measurements by (meter, scope, method) and merge their per-device energies."""
    groups: dict[tuple[str, str, str], list[EnergyMeasurement]] = {}
    for r in reports:
        for m in r.measurements:
            groups.setdefault((m.meter, m.scope, m.method), []).append(m)
    merged, flags = [], []
    for (meter, scope, method), items in groups.items():
        by_device: dict[str, float] = {}
        for m in items:
            for device, joules in m.energy_j_by_device.items():
                if device in by_device:
                    flags.append(_twice_flag(device))
                by_device[device] = max(joules, by_device.get(device, joules))
        merged.append(
            EnergyMeasurement.from_devices(
                meter=meter,
                window=items[0].window,
                scope=scope,  # type: ignore[arg-type]
                method=method,  # type: ignore[arg-type]
                energy_j_by_device=by_device,
                duration_s=duration_s,
                warnings=[w for m in items for w in m.warnings],
            )
        )
    return merged, flags


def _twice_flag(device: str) -> QualityFlag:
    return QualityFlag(
        code="device_measured_twice",
        message=f"{device} was measured by more than one process: counted once (largest reading)",
        severity="info",
    )


def _scope_total(measurements: Sequence[EnergyMeasurement], scope: str) -> float | None:
    """Energy of one scope from its first meter (meters of one scope are alternatives)."""
    for m in measurements:
        if m.scope == scope:
            return m.energy_j
    return None


def _union(dicts: object) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:  # type: ignore[attr-defined]
        out.update(d)
    return out


def _merge_baselines(items: Sequence[BaselineAdjustment | None]) -> BaselineAdjustment | None:
    """Sum of per-process idle splits (each covers its own GPUs); None if any is missing."""
    if not items or any(b is None for b in items):
        return None
    parts = [b for b in items if b is not None]
    if len(parts) == 1:
        return parts[0]
    by_device = _union(b.baseline.idle_power_w_by_device for b in parts)
    idle_w = sum(by_device.values()) if by_device else sum(b.idle_power_w for b in parts)
    gross = sum(b.gross_energy_j for b in parts)
    idle_j = sum(b.idle_energy_j for b in parts)
    first = parts[0].baseline
    baseline = IdleBaseline(
        key=",".join(sorted({b.baseline.key for b in parts})),
        idle_power_w=idle_w,
        idle_power_w_by_device=by_device,
        duration_s=first.duration_s,
        method=first.method,
        measured_at_unix_s=min(b.baseline.measured_at_unix_s for b in parts),
        cached=any(b.baseline.cached for b in parts),
        **_merge_idle_state([b.baseline for b in parts]),
    )
    return BaselineAdjustment(
        baseline=baseline,
        idle_power_w=idle_w,
        gross_energy_j=gross,
        idle_energy_j=idle_j,
        energy_above_idle_j=sum(b.energy_above_idle_j for b in parts),
        clamped=any(b.clamped for b in parts),
        note="summed over processes",
    )


def _merge_idle_state(baselines: Sequence[IdleBaseline]) -> dict[str, Any]:
    """Context/clock state of per-process baselines: processes summed, clock and temperature
    averaged, power trend weighted by idle power; settled only if every part settled (any
    unknown part makes the count, trend and ``settled`` unknown)."""
    counts = [b.compute_processes for b in baselines]
    trends = [(b.power_trend_pct, b.idle_power_w) for b in baselines]
    settled = [b.settled for b in baselines]
    weight_w = sum(w for _, w in trends)
    known_trends = [(t, w) for t, w in trends if t is not None]
    return {
        "compute_processes": None if None in counts else sum(c for c in counts if c is not None),
        "sm_clock_mhz": _mean_known([b.sm_clock_mhz for b in baselines]),
        "temperature_c": _mean_known([b.temperature_c for b in baselines]),
        "power_trend_pct": (
            sum(t * w for t, w in known_trends) / weight_w
            if len(known_trends) == len(trends) and weight_w > 0
            else None
        ),
        "settled": None if None in settled else all(settled),
    }


def _mean_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
