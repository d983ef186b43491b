"""Late aggregation: per-process raw results -> one ExperimentResult.

Rules (docs/measurement.md, "Several processes: late aggregation"):

- **Samples are pooled, never averaged:** request timings of every process go into one set
  before any statistic is taken; tokens and FLOPs are therefore sums.
- **The window** runs from the earliest start to the latest end (monotonic stamps when every
  process has them, else wall clock); throughput is over that window.
- **Energy** is summed over the distinct devices in the processes' raw results: a device
  that two processes carry (two processes on one GPU, or the host's CPU package) is counted
  once (largest reading). For a GPU that is worth a ``device_measured_twice`` flag; the host
  devices are shared by every process by nature and are deduplicated silently.
- **Missing processes** (planned but without a complete raw result) give a partial result:
  flag ``processes_missing`` (critical) naming them and why; figures cover the others.
- **Overlap:** when the processes' windows overlap for less than
  :data:`MIN_WINDOW_OVERLAP` of their union, flag ``windows_not_overlapping``.
- Per-process and per-device breakdowns are kept in the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llenergymeasure.catalogue.architectures import ArchitectureSpec
from llenergymeasure.core.energy.baseline import adjust_for_idle
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
from llenergymeasure.domain.results import (
    DeviceBreakdown,
    ExperimentResult,
    LaunchRecord,
    ProcessBreakdown,
    RawProcessResult,
    core_fields,
)
from llenergymeasure.exceptions import ExperimentError
from llenergymeasure.results.derive import build_metrics, estimate_co2, quality_flags, to_timings
from llenergymeasure.results.filenames import RAW_DIRNAME, process_result_filename

#: Windows of a run's processes must overlap for at least this share of their union to
#: count as one concurrent measurement (else ``windows_not_overlapping``).
MIN_WINDOW_OVERLAP = 0.9
#: Scopes whose devices belong to the host, which every process of a run shares.
HOST_SCOPES = ("cpu_package", "dram")


def aggregate_process_results(
    raws: Sequence[RawProcessResult],
    *,
    arch: TransformerShape | None = None,
    launch: LaunchRecord | None = None,
    unusable: Mapping[int, str] | None = None,
) -> ExperimentResult:
    """Combine the raw results of the processes of one experiment (late aggregation).

    ``launch`` (the launching process's record) supplies the run-level fields (environment,
    dataset, state, timings outside the window, parent flags) and why a worker is missing;
    ``unusable`` maps process indices to why their raw file could not be used. ``arch``
    gives the FLOPs shapes; by default it is resolved from the config's model (catalogue
    name or local config.json) and FLOPs are left out when that fails. Raises
    ExperimentError when no process completed or the results are not of one experiment.
    """
    planned = launch.n_processes if launch is not None else None
    raws = _check_consistent(raws, launch, unusable or {})
    first = raws[0]
    planned = planned or max(r.n_processes for r in raws)
    missing = _missing(raws, planned, launch, unusable or {})
    if arch is None:
        arch = resolve_arch_quietly(str(first.config.get("model", "")))
    timings = [t for raw in raws for t in to_timings(raw.timings)]
    duration_s = _window_s(raws)
    energy = merge_energy_reports(
        [r.energy for r in raws if r.energy is not None],
        duration_s,
        owners=[r.process_index for r in raws if r.energy is not None],
    )
    no_energy = None
    if energy is None:
        no_energy = next(
            (r.energy_not_measured_reason for r in raws if r.energy_not_measured_reason),
            launch.energy_not_measured_reason if launch is not None else None,
        )
        no_energy = no_energy or "no meter measured"
    metrics = build_metrics(timings, duration_s, energy, arch, _merge_memory(raws))
    run_flags = _process_flags(raws, planned, missing)
    # one flag per code; quality_flags lists the energy layer's flags before its own
    parent_flags = list(launch.warnings) if launch is not None else []
    flags = merge_flags_by_code(
        run_flags
        + parent_flags
        + [w for r in raws for w in r.warnings]
        + quality_flags(metrics, energy, no_energy, first.ttft_not_measured_reason)
    )
    base: RawProcessResult | LaunchRecord = launch if launch is not None else first
    ends = [r.ended_at for r in raws if r.ended_at is not None]
    merged: dict[str, Any] = {
        **core_fields(base),
        "warmup": first.warmup,
        "energy": energy,
        "energy_not_measured_reason": no_energy,
        "warnings": flags,
        "started_at": min([r.started_at for r in raws] + ([base.started_at])),
        "ended_at": base.ended_at if launch is not None else (max(ends) if ends else None),
    }
    if launch is not None:
        merged |= {
            "llem_version": launch.llem_version,
            "state": launch.state,
            "state_transitions": list(launch.state_transitions),
            "timeseries_path": launch.timeseries_path,
            "setup_s": launch.setup_s,
            "phase_durations_s": dict(launch.phase_durations_s),
        }
    several = planned > 1 or launch is not None
    return ExperimentResult(
        **merged,
        metrics=metrics,
        co2=estimate_co2(energy, first.carbon_intensity_gco2_kwh, first.datacenter_pue),
        timing_method=first.timing_method,
        backend_details=dict(first.backend_details),
        batch_durations_s=[d for r in raws for d in r.batch_durations_s],
        n_processes=planned,
        measurement_window_s=duration_s,
        process_breakdown=_process_breakdown(raws, planned, missing) if several else [],
        device_breakdown=_device_breakdown(raws, energy, launch) if several else [],
    )


def build_run_result(run_dir: Path) -> ExperimentResult:
    """Aggregate what ``<run_dir>/raw/`` holds into the run's ExperimentResult (no write).

    Raises FileNotFoundError without ``raw/``, ExperimentError when nothing can be
    aggregated.
    """
    from llenergymeasure.results.persistence import read_raw_run

    run_dir = Path(run_dir)
    found = read_raw_run(run_dir)
    result = aggregate_process_results(found.raws, launch=found.launch, unusable=found.unusable)
    names = [f"{RAW_DIRNAME}/{process_result_filename(r.process_index)}" for r in found.raws]
    return result.model_copy(update={"process_results": names, "run_dir": str(run_dir)})


def aggregate_run_dir(run_dir: Path) -> tuple[ExperimentResult, Path]:
    """Re-run the late aggregation of a run directory and write its ``result.json``.

    The library call behind ``llem aggregate DIR``: reads ``raw/process_<i>.json`` (those
    with a completion marker) and ``raw/launch.json``, aggregates them
    (:func:`aggregate_process_results`) and writes ``result.json``. A different existing
    ``result.json`` is kept as ``result.replaced-<timestamp>.json``; the raw results, the
    measurement itself, are never touched. Returns (result, path of result.json).
    """
    from llenergymeasure.results.persistence import replace_result

    result = build_run_result(run_dir)
    path, _ = replace_result(result, Path(run_dir))
    return result, path


# ---- consistency, missing processes, windows --------------------------------------------
def _check_consistent(
    raws: Sequence[RawProcessResult], launch: LaunchRecord | None, unusable: Mapping[int, str]
) -> list[RawProcessResult]:
    """Sorted by process index; all from one experiment; each process at most once."""
    if not raws:
        reasons = _reasons_text(
            {
                **unusable,
                **{
                    p.process_index: p.reason or p.status
                    for p in (launch.processes if launch else [])
                },
            }
        )
        raise ExperimentError(
            "no process completed, nothing to aggregate" + (f": {reasons}" if reasons else "")
        )
    ordered = sorted(raws, key=lambda r: r.process_index)
    ids = {r.experiment_id for r in ordered} | ({launch.experiment_id} if launch else set())
    hashes = {r.config_hash for r in ordered} | ({launch.config_hash} if launch else set())
    if len(ids) > 1 or len(hashes) > 1:
        raise ExperimentError(f"process results from different experiments: {sorted(ids)}")
    indices = [r.process_index for r in ordered]
    if len(set(indices)) != len(indices):
        raise ExperimentError(
            f"process results with repeated indices {indices}: a process wrote twice"
        )
    planned = launch.n_processes if launch else max(r.n_processes for r in ordered)
    if max(indices) >= planned or any(r.n_processes != planned for r in ordered):
        raise ExperimentError(f"process indices {indices} do not fit a run of {planned} processes")
    return ordered


def _missing(
    raws: Sequence[RawProcessResult],
    planned: int,
    launch: LaunchRecord | None,
    unusable: Mapping[int, str],
) -> dict[int, str]:
    """Planned processes without a complete raw result -> why (best explanation known)."""
    present = {r.process_index for r in raws}
    outcomes = {p.process_index: p for p in launch.processes} if launch else {}
    missing: dict[int, str] = {}
    for index in range(planned):
        if index in present:
            continue
        outcome = outcomes.get(index)
        if outcome is not None and outcome.status != "completed":
            why = outcome.reason or outcome.status
            if outcome.stage:
                why += f" (last stage: {outcome.stage})"
        elif index in unusable:
            why = unusable[index]
        else:
            why = "no raw result"
        missing[index] = why
    return missing


def _reasons_text(reasons: Mapping[int, str]) -> str:
    return "; ".join(f"process {i}: {why}" for i, why in sorted(reasons.items()))


def _edges(raws: Sequence[RawProcessResult]) -> list[tuple[float, float]]:
    """(start, end) of every window: monotonic when all have it, else wall clock."""
    mono = [(r.window_start_monotonic_s, r.window_end_monotonic_s) for r in raws]
    if all(a is not None and b is not None for a, b in mono):
        return [(float(a), float(b)) for a, b in mono]  # type: ignore[arg-type]
    return [(r.window_start_unix_s, r.window_end_unix_s) for r in raws]


def _window_s(raws: Sequence[RawProcessResult]) -> float:
    """Span from the earliest window start to the latest end (single process: its own)."""
    if len(raws) == 1:
        return raws[0].duration_s
    edges = _edges(raws)
    span = max(b for _, b in edges) - min(a for a, _ in edges)
    return max(span, max(r.duration_s for r in raws))


def window_overlap(raws: Sequence[RawProcessResult]) -> float | None:
    """Share of the windows' union during which every process was measuring (1.0 = all
    windows identical); None for fewer than two processes."""
    if len(raws) < 2:
        return None
    edges = _edges(raws)
    union = max(b for _, b in edges) - min(a for a, _ in edges)
    common = min(b for _, b in edges) - max(a for a, _ in edges)
    return max(0.0, common) / union if union > 0 else 1.0


def _process_flags(
    raws: Sequence[RawProcessResult], planned: int, missing: Mapping[int, str]
) -> list[QualityFlag]:
    """``processes_missing`` and ``windows_not_overlapping``."""
    flags: list[QualityFlag] = []
    if missing:
        flags.append(
            QualityFlag(
                code="processes_missing",
                message=(
                    f"partial result: {len(missing)} of {planned} processes left no result "
                    f"({_reasons_text(missing)}); tokens, throughput, latency and energy "
                    "cover the other processes and their devices only"
                ),
                severity="critical",
            )
        )
    overlap = window_overlap(raws)
    if overlap is not None and overlap < MIN_WINDOW_OVERLAP:
        flags.append(
            QualityFlag(
                code="windows_not_overlapping",
                message=(
                    f"the processes' windows overlap for {100 * overlap:.0f} % of their union "
                    f"(< {100 * MIN_WINDOW_OVERLAP:.0f} %): they did not run as one concurrent "
                    "measurement; throughput over the union understates the concurrent rate"
                ),
            )
        )
    return flags


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


# ---- breakdowns -------------------------------------------------------------------------
def _process_breakdown(
    raws: Sequence[RawProcessResult], planned: int, missing: Mapping[int, str]
) -> list[ProcessBreakdown]:
    """One entry per planned process, in index order."""
    by_index = {r.process_index: r for r in raws}
    rows: list[ProcessBreakdown] = []
    for index in range(planned):
        raw = by_index.get(index)
        if raw is None:
            rows.append(
                ProcessBreakdown(process_index=index, status="missing", reason=missing.get(index))
            )
            continue
        n_out = sum(t.output_tokens for t in raw.timings)
        rows.append(
            ProcessBreakdown(
                process_index=index,
                status="completed",
                result_file=f"{RAW_DIRNAME}/{process_result_filename(index)}",
                device=raw.device,
                gpu_devices=list(raw.gpu_devices),
                cuda_visible_devices=raw.cuda_visible_devices,
                window_start_unix_s=raw.window_start_unix_s,
                window_end_unix_s=raw.window_end_unix_s,
                duration_s=raw.duration_s,
                n_requests=len(raw.timings),
                input_tokens=sum(t.input_tokens for t in raw.timings),
                output_tokens=n_out,
                output_tokens_per_s=n_out / raw.duration_s,
                warmup_runs=raw.warmup.runs if raw.warmup is not None else None,
            )
        )
    return rows


def _device_breakdown(
    raws: Sequence[RawProcessResult], energy: EnergyReport | None, launch: LaunchRecord | None
) -> list[DeviceBreakdown]:
    """Every device with energy: counted ones from the aggregate, then devices only the
    launcher's report has (their processes are missing)."""
    carriers: dict[str, list[int]] = {}
    for r in raws:
        for m in r.energy.measurements if r.energy is not None else []:
            for device in m.energy_j_by_device:
                carriers.setdefault(device, [])
                if r.process_index not in carriers[device]:
                    carriers[device].append(r.process_index)
    for r in raws:  # GPUs a process ran on, even where no energy was measured
        for device in r.gpu_devices:
            owners = carriers.setdefault(device, [])
            if r.process_index not in owners:
                owners.append(r.process_index)
    rows: list[DeviceBreakdown] = []
    counted: set[tuple[str, str]] = set()
    for m in energy.measurements if energy is not None else []:
        for device, joules in m.energy_j_by_device.items():
            owners = sorted(carriers.get(device, []))
            note = None
            if m.scope == "gpu" and len(owners) > 1:
                note = f"ran processes {owners}: counted once"
            elif m.scope not in ("gpu",):
                note = "host device, shared by every process: counted once"
            counted.add((m.meter, device))
            rows.append(_device_row(m, device, joules, owners, True, note))
    full = launch.energy if launch is not None else None
    for m in full.measurements if full is not None else []:
        for device, joules in m.energy_j_by_device.items():
            if (m.meter, device) in counted:
                continue
            note = "its process left no result: not in the aggregate's energy"
            rows.append(_device_row(m, device, joules, [], False, note))
    return rows


def _device_row(
    m: EnergyMeasurement,
    device: str,
    joules: float,
    owners: list[int],
    counted: bool,
    note: str | None,
) -> DeviceBreakdown:
    return DeviceBreakdown(
        device=device,
        scope=m.scope,
        method=m.method,
        meter=m.meter,
        energy_j=joules,
        processes=owners,
        counted=counted,
        note=note,
    )


# ---- energy -----------------------------------------------------------------------------
def merge_energy_reports(
    reports: Sequence[EnergyReport],
    duration_s: float,
    owners: Sequence[int] | None = None,
) -> EnergyReport | None:
    """One report over several processes: per scope, energy summed over distinct devices.

    A single report is returned unchanged. A device carried by more than one report keeps
    its largest reading (counted once); for a GPU a ``device_measured_twice`` flag names
    the processes (``owners``: the process index of each report). The merged report's
    ``duration_s`` is the longest of the reports' energy windows (at least ``duration_s``).
    """
    if len(reports) <= 1:
        return reports[0] if reports else None
    owner_ids = list(owners) if owners is not None else list(range(len(reports)))
    energy_s = max([duration_s, *(r.duration_s for r in reports)])
    measurements, flags = _merge_measurements(reports, owner_ids, energy_s)
    totals = {scope: _scope_total(measurements, scope) for scope in ("gpu", "cpu_package", "dram")}
    not_measured: dict[str, str] = {}
    for r in reports:
        not_measured.update({k: v for k, v in r.not_measured.items() if totals.get(k) is None})
    polled_by_device = _union(r.polled_gpu_energy_j_by_device for r in reports)
    polled_j = (
        sum(polled_by_device.values())
        if polled_by_device and all(r.polled_gpu_energy_j is not None for r in reports)
        else None
    )
    gpu_j = totals["gpu"]
    baseline, baseline_flags = _merge_baselines(reports, gpu_j, energy_s)
    first = reports[0]
    return EnergyReport(
        window=reports[0].window,
        duration_s=energy_s,
        measurements=measurements,
        gpu_energy_j=gpu_j,
        cpu_energy_j=totals["cpu_package"],
        dram_energy_j=totals["dram"],
        not_measured=not_measured,
        baseline=baseline,
        polled_gpu_energy_j=polled_j,
        polled_gpu_energy_j_by_device=polled_by_device,
        counter_vs_polled_pct=100.0 * (polled_j - gpu_j) / gpu_j if polled_j and gpu_j else None,
        thermal=max(
            (r.thermal for r in reports if r.thermal is not None),
            key=lambda t: t.max_temperature_c or float("-inf"),
            default=None,
        ),
        meter_selection=reports[0].meter_selection,
        gpu_update_period_ms_by_device=_union(r.gpu_update_period_ms_by_device for r in reports),
        warnings=merge_flags_by_code(
            [w for r in reports for w in r.warnings if w.code != "baseline_clamped"]
            + flags
            + baseline_flags
        ),
        # energy by phase is not merged across processes: a not-measured reason carries over
        phases=first.phases if first.phases is not None and first.phases.not_measured else None,
        per_request=(
            first.per_request
            if first.per_request is not None and first.per_request.not_measured
            else None
        ),
    )


def _merge_measurements(
    reports: Sequence[EnergyReport], owners: Sequence[int], duration_s: float
) -> tuple[list[EnergyMeasurement], list[QualityFlag]]:
    """Group measurements by (meter, scope, method) and merge their per-device energies."""
    groups: dict[tuple[str, str, str], list[tuple[int, EnergyMeasurement]]] = {}
    for owner, r in zip(owners, reports, strict=True):
        for m in r.measurements:
            groups.setdefault((m.meter, m.scope, m.method), []).append((owner, m))
    merged, flags = [], []
    for (meter, scope, method), items in groups.items():
        by_device: dict[str, float] = {}
        seen_by: dict[str, list[int]] = {}
        for owner, m in items:
            for device, joules in m.energy_j_by_device.items():
                seen_by.setdefault(device, []).append(owner)
                by_device[device] = max(joules, by_device.get(device, joules))
        if scope not in HOST_SCOPES:
            flags += [_twice_flag(d, who) for d, who in seen_by.items() if len(who) > 1]
        merged.append(
            EnergyMeasurement.from_devices(
                meter=meter,
                window=items[0][1].window,
                scope=scope,  # type: ignore[arg-type]
                method=method,  # type: ignore[arg-type]
                energy_j_by_device=by_device,
                duration_s=duration_s,
                warnings=list(dict.fromkeys(w for _, m in items for w in m.warnings)),
            )
        )
    return merged, flags


def _twice_flag(device: str, owners: Sequence[int]) -> QualityFlag:
    return QualityFlag(
        code="device_measured_twice",
        message=(
            f"{device} is in the results of processes {sorted(owners)} (they shared it): "
            "its energy is counted once (largest reading)"
        ),
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


def _merge_baselines(
    reports: Sequence[EnergyReport], gpu_energy_j: float | None, duration_s: float
) -> tuple[BaselineAdjustment | None, list[QualityFlag]]:
    """The idle split of the merged GPU energy: idle power summed over the distinct GPUs
    of the parts (a GPU in two parts counted once), over the merged energy window. None
    if a part has no baseline or no GPU energy was measured."""
    items = [r.baseline for r in reports]
    if not items or any(b is None for b in items) or gpu_energy_j is None:
        return None, []
    parts = [b.baseline for b in items if b is not None]
    by_device = _union(b.idle_power_w_by_device for b in parts)
    idle_w = sum(by_device.values()) if by_device else sum(b.idle_power_w for b in parts)
    first = parts[0]
    baseline = IdleBaseline(
        key=",".join(sorted({b.key for b in parts})),
        idle_power_w=idle_w,
        idle_power_w_by_device=by_device,
        duration_s=first.duration_s,
        method=first.method,
        measured_at_unix_s=min(b.measured_at_unix_s for b in parts),
        cached=any(b.cached for b in parts),
        **_merge_idle_state(parts),
    )
    adjustment, flag = adjust_for_idle(gpu_energy_j, duration_s, baseline)
    if len({b.key for b in parts}) > 1:
        adjustment = adjustment.model_copy(update={"note": "idle power summed over processes"})
    return adjustment, [flag] if flag else []


def _merge_idle_state(baselines: Sequence[IdleBaseline]) -> dict[str, Any]:
    """Context/clock state of per-process baselines: processes summed, clock and temperature
    averaged, power trend weighted by idle power; settled only if every part settled (any
    unknown part makes the count, trend and ``settled`` unknown). Identical parts (one
    baseline shared by several processes' reports) count once."""
    distinct = list({b.model_dump_json(): b for b in baselines}.values())
    counts = [b.compute_processes for b in distinct]
    trends = [(b.power_trend_pct, b.idle_power_w) for b in distinct]
    settled = [b.settled for b in distinct]
    weight_w = sum(w for _, w in trends)
    known_trends = [(t, w) for t, w in trends if t is not None]
    return {
        "compute_processes": None if None in counts else sum(c for c in counts if c is not None),
        "sm_clock_mhz": _mean_known([b.sm_clock_mhz for b in distinct]),
        "temperature_c": _mean_known([b.temperature_c for b in distinct]),
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


# ---- one report -> the part of one process ------------------------------------------------
@dataclass(frozen=True)
class _Keep:
    gpus: frozenset[str]

    def device(self, key: str) -> bool:
        return not key.startswith("gpu:") or key in self.gpus


def restrict_energy_report(report: EnergyReport, gpu_devices: Sequence[str]) -> EnergyReport:
    """The part of ``report`` that belongs to a process that ran on ``gpu_devices``.

    GPU measurements keep only those GPUs (``gpu:<index>``); host scopes (CPU package, DRAM)
    are kept whole, since every process ran on the host; the idle split is recomputed for
    the kept GPUs. The energy layer's flags stay (they describe the window). Merging the
    parts of all processes again (:func:`merge_energy_reports`) gives back ``report``'s
    figures for the union of their GPUs.
    """
    keep = _Keep(frozenset(gpu_devices))
    measurements = []
    for m in report.measurements:
        by_device = {k: v for k, v in m.energy_j_by_device.items() if keep.device(k)}
        if m.scope == "gpu" and not by_device:
            continue
        measurements.append(
            m
            if by_device == m.energy_j_by_device
            else EnergyMeasurement.from_devices(
                meter=m.meter,
                window=m.window,
                scope=m.scope,
                method=m.method,
                energy_j_by_device=by_device,
                duration_s=m.duration_s,
                warnings=m.warnings,
            )
        )
    gpu_j = _scope_total(measurements, "gpu")
    not_measured = {k: v for k, v in report.not_measured.items() if keep.device(k)}
    if gpu_j is None and report.gpu_energy_j is not None:
        not_measured.setdefault("gpu", "this process ran on none of the measured GPUs")
    polled = {k: v for k, v in report.polled_gpu_energy_j_by_device.items() if keep.device(k)}
    polled_j = sum(polled.values()) if polled else None
    counter = {
        k: v
        for m in measurements
        if m.scope == "gpu" and m.method == "counter"
        for k, v in m.energy_j_by_device.items()
        if k in polled
    }
    counter_j = sum(counter.values())
    polled_same = sum(polled[k] for k in counter)
    return report.model_copy(
        update={
            "measurements": measurements,
            "gpu_energy_j": gpu_j,
            "not_measured": not_measured,
            "baseline": _restrict_baseline(report.baseline, keep, gpu_j, report.duration_s),
            "polled_gpu_energy_j": polled_j,
            "polled_gpu_energy_j_by_device": polled,
            "counter_vs_polled_pct": (
                100.0 * (polled_same - counter_j) / counter_j if counter and counter_j else None
            ),
            "gpu_update_period_ms_by_device": {
                k: v for k, v in report.gpu_update_period_ms_by_device.items() if keep.device(k)
            },
        }
    )


def _restrict_baseline(
    adjustment: BaselineAdjustment | None, keep: _Keep, gpu_j: float | None, duration_s: float
) -> BaselineAdjustment | None:
    """The idle split for the kept GPUs only."""
    if adjustment is None or gpu_j is None:
        return None
    full = adjustment.baseline
    by_device = {k: v for k, v in full.idle_power_w_by_device.items() if keep.device(k)}
    if by_device == full.idle_power_w_by_device:
        return adjustment
    part = full.model_copy(
        update={"idle_power_w": sum(by_device.values()), "idle_power_w_by_device": by_device}
    )
    return adjust_for_idle(gpu_j, duration_s, part)[0]
