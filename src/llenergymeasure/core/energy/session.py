"""EnergySession: the energy layer's one entry point for the orchestrator.

    session = EnergySession(energy_backend="auto", timeline_path=path, baseline=BaselineSettings())
    session.start()                          # meters chosen, NVML probed, sampler process up
    baseline = session.measure_baseline()    # IdleBaseline | None (cached by GPU UUIDs, TTL)
    session.begin_window("measure", sync=torch.cuda.synchronize)
    ...                                      # inference only
    report = session.end_window("measure", sync=torch.cuda.synchronize)   # EnergyReport
    session.stop()                           # sampler down, timeline parquet written

The caller synchronises the device (``sync`` hook) so that the window edges bracket the GPU
work; this module never imports torch.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llenergymeasure.core.energy._nvml import SLOWDOWN_REASONS, NvmlError, nvml
from llenergymeasure.core.energy.baseline import (
    BaselineCache,
    BaselineSettings,
    IdleState,
    adjust_for_idle,
    baseline_key,
    idle_state,
)
from llenergymeasure.core.energy.nvml import NvmlMeter
from llenergymeasure.core.energy.protocol import WindowReading
from llenergymeasure.core.energy.quality import (
    baseline_unsettled_flag,
    drop_repeated_flags,
    low_sample_flag,
    not_measured_flag,
    persistence_flag,
    thermal_flags,
)
from llenergymeasure.core.energy.rapl import DEFAULT_ROOT
from llenergymeasure.core.energy.sampler import NvmlSampleSource, SampleSource, TelemetrySampler
from llenergymeasure.core.energy.selection import MeterPlan, select_energy_meters
from llenergymeasure.domain.energy import EnergyReport, IdleBaseline, QualityFlag
from llenergymeasure.exceptions import MeterError

BASELINE_WINDOW = "__idle_baseline__"


class EnergySession:
    """Meters + telemetry sampler + idle baseline behind named windows."""

    def __init__(
        self,
        energy_backend: str = "auto",
        gpu_indices: Sequence[int] | None = None,
        sample_interval_ms: float = 100.0,
        timeline_path: Path | None = None,
        baseline: BaselineSettings | None = None,
        *,
        rapl_root: Path = DEFAULT_ROOT,
        cpu_tdp_w: float | None = None,
        sampler_enabled: bool = True,
        sample_source: SampleSource | None = None,
        environ: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.energy_backend = energy_backend
        self.gpu_indices = gpu_indices
        self.sample_interval_s = sample_interval_ms / 1000.0
        self.timeline_path = timeline_path
        self.baseline_settings = baseline
        self.rapl_root = rapl_root
        self.cpu_tdp_w = cpu_tdp_w
        self.sampler_enabled = sampler_enabled
        self.sample_source = sample_source
        self.environ = environ
        self.clock = clock
        self.sleep = sleep
        self.plan: MeterPlan | None = None
        self.sampler: TelemetrySampler | None = None
        self.baseline: IdleBaseline | None = None
        self.session_flags: list[QualityFlag] = []
        self._t0: dict[str, float] = {}

    # --- life cycle ------------------------------------------------------------------
    def start(self) -> EnergySession:
        """Choose and start the meters; start the sampler when the NVML meter owns the GPUs."""
        if self.plan is not None:
            return self
        plan = select_energy_meters(
            self.energy_backend,
            self.gpu_indices,
            rapl_root=self.rapl_root,
            cpu_tdp_w=self.cpu_tdp_w,
            environ=self.environ,
            clock=self.clock,
            sleep=self.sleep,
        )
        self.plan = plan
        self.session_flags = [QualityFlag(code="device_order", message=n) for n in plan.notes]
        if plan.nvml_meter is not None and self.sampler_enabled:
            self._start_sampler(plan, plan.nvml_meter)
        try:
            for meter in plan.meters:
                meter.start()
        except Exception:
            self.stop()
            raise
        if plan.nvml_meter is not None:
            self.session_flags += self._persistence_flags(plan.nvml_meter)
        return self

    def _start_sampler(self, plan: MeterPlan, meter: NvmlMeter) -> None:
        """Start telemetry; if it cannot start, measure without it and say so."""
        sampler = TelemetrySampler(self._sample_source(plan), self.sample_interval_s)
        try:
            sampler.start()
        except MeterError as e:
            self.session_flags.append(
                QualityFlag(
                    code="sampler_unavailable",
                    message=(
                        "Telemetry sampler did not start, so there is no timeline, thermal summary "
                        "or polled cross-check (counter energy is unaffected). With the spawn start "
                        'method the main script needs an `if __name__ == "__main__":` guard. '
                        f"Cause: {str(e).strip().splitlines()[-1]}"
                    ),
                )
            )
            return
        self.sampler = sampler
        meter.polled = sampler

    def _sample_source(self, plan: MeterPlan) -> SampleSource:
        """The given source, or NVML for the GPUs in use (with the NVML library installed
        here, if any, so that the sampler process reads the same GPUs)."""
        if self.sample_source is not None:
            return self.sample_source
        indices = tuple(d.nvml_index for d in plan.gpus)
        return NvmlSampleSource(indices, fake=nvml.installed_lib())

    @staticmethod
    def _persistence_flags(meter: NvmlMeter) -> list[QualityFlag]:
        """Flag GPUs whose persistence mode is off."""
        flags = []
        for dev in meter.devices:
            handle = nvml.handle_by_index(dev.nvml_index)
            if nvml.optional(nvml.persistence_mode, handle) is False:
                flags.append(persistence_flag(dev.key))
        return flags

    def stop(self) -> Path | None:
        """Stop meters and sampler; write the timeline if asked. Returns its path (or None)."""
        written = None
        try:
            if self.sampler is not None:
                self.sampler.stop()
                if self.timeline_path is not None and self.sampler.timeline.rows:
                    written = self.sampler.timeline.to_parquet(self.timeline_path)
        finally:  # a timeline that cannot be written (a full disk) still stops the meters
            if self.plan is not None:
                for meter in self.plan.meters:
                    meter.stop()
        return written

    def __enter__(self) -> EnergySession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- windows ---------------------------------------------------------------------
    def _require_plan(self) -> MeterPlan:
        if self.plan is None:
            raise MeterError("EnergySession: call start() before measuring.")
        return self.plan

    def begin_window(self, name: str, sync: Callable[[], None] | None = None) -> None:
        """Open window ``name`` on every meter (after ``sync()``, if given)."""
        plan = self._require_plan()
        if sync is not None:
            sync()
        if self.sampler is not None:
            self.sampler.flush()  # a sample right at the edge, before the counter reads
        self._t0[name] = self.clock()
        for meter in plan.meters:
            meter.begin_window(name)

    def end_window(self, name: str, sync: Callable[[], None] | None = None) -> EnergyReport:
        """Close window ``name`` on every meter and assemble the EnergyReport."""
        plan = self._require_plan()
        t0, t1, readings = self._close_window(name, plan, sync)
        return self._report(name, t0, t1, readings, plan)

    def _close_window(
        self, name: str, plan: MeterPlan, sync: Callable[[], None] | None
    ) -> tuple[float, float, list[WindowReading]]:
        """End window ``name`` on every meter: its edges (t0, t1) and the meters' readings."""
        if sync is not None:
            sync()
        readings = [meter.end_window(name) for meter in plan.meters]
        t1 = self.clock()
        t0 = self._t0.pop(name, t1)
        edges = next((r.edges_s for r in readings if r.edges_s is not None), None)
        if edges is not None:  # the meter read the hardware at these times
            t0, t1 = edges
        if self.sampler is not None:
            self.sampler.flush()
        return t0, t1, readings

    # --- baseline --------------------------------------------------------------------
    def measure_baseline(self) -> IdleBaseline | None:
        """Idle GPU power (cached per GPU set and context state for the TTL).

        None if disabled or no GPU meter. The compute processes on the GPUs are counted just
        before measuring: a baseline taken with no CUDA context open is never reused for one
        with a context open (or the other way round); see ``core/energy/baseline.py``.
        """
        settings = self.baseline_settings
        plan = self._require_plan()
        # the baseline is idle power per GPU in use: it needs GPU energy per device
        gpu_meters = [m for m in plan.meters if "gpu" in m.scopes and m.per_device]
        if settings is None or not settings.enabled or not gpu_meters or not plan.gpus:
            return None
        cache = BaselineCache(settings.cache_path, settings.cache_ttl_s)
        processes = self._compute_processes(plan)
        context_open = None if processes is None else processes > 0
        key = baseline_key([d.uuid for d in plan.gpus], context_open, socket.gethostname())
        self.baseline = cache.get(key) or self._measure_idle(key, settings.duration_s, processes)
        if not self.baseline.cached:
            cache.put(self.baseline)
        return self.baseline

    @staticmethod
    def _compute_processes(plan: MeterPlan) -> int | None:
        """Processes holding a compute context on the GPUs in use; None if NVML cannot say.

        NVML initialisation is reference counted, so the balanced init/shutdown here is safe
        whether the NVML meter or Zeus owns NVML.
        """
        try:
            nvml.init()
        except (NvmlError, ImportError):
            return None
        try:
            total = 0
            for dev in plan.gpus:
                handle = nvml.optional(nvml.handle_by_index, dev.nvml_index)
                count = (
                    None if handle is None else nvml.optional(nvml.compute_process_count, handle)
                )
                if count is None:
                    return None
                total += count
            return total
        finally:
            nvml.shutdown()

    def _measure_idle(self, key: str, duration_s: float, processes: int | None) -> IdleBaseline:
        """Sleep through a window with nothing running and divide GPU energy by its duration."""
        plan = self._require_plan()
        self.begin_window(BASELINE_WINDOW)
        self.sleep(duration_s)
        t0, t1, readings = self._close_window(BASELINE_WINDOW, plan, None)
        report = self._report(BASELINE_WINDOW, t0, t1, readings, plan)
        gpu = [m for m in report.measurements if m.scope == "gpu"]
        if not gpu or report.duration_s <= 0:
            raise MeterError(f"Idle baseline could not be measured: {report.not_measured}")
        by_device = {k: v / report.duration_s for m in gpu for k, v in m.energy_j_by_device.items()}
        methods = {m.method for m in gpu}
        state = IdleState()
        if self.sampler is not None:
            state = idle_state(self.sampler.timeline, t0, t1, [d.key for d in plan.gpus])
        return IdleBaseline(
            key=key,
            idle_power_w=sum(by_device.values()),
            idle_power_w_by_device=by_device,
            duration_s=report.duration_s,
            method="counter" if methods == {"counter"} else "polled",
            measured_at_unix_s=time.time(),
            compute_processes=processes,
            sm_clock_mhz=state.sm_clock_mhz,
            temperature_c=state.temperature_c,
            power_trend_pct=state.power_trend_pct,
            settled=state.settled,
        )

    # --- report ----------------------------------------------------------------------
    def _report(
        self, name: str, t0: float, t1: float, readings: list[WindowReading], plan: MeterPlan
    ) -> EnergyReport:
        """Assemble measurements, cross-check, thermal summary, baseline and flags."""
        measurements = [m for r in readings for m in r.measurements]
        flags = [*self.session_flags, *(f for r in readings for f in r.flags)]
        records = [nm for r in readings for nm in r.not_measured]
        not_measured = {nm.device or nm.scope: nm.reason for nm in records}
        devices_not_measured = {nm.device: nm.reason for nm in records if nm.device}
        totals = {s: _sum_scope(measurements, s) for s in ("gpu", "cpu_package", "dram")}
        flags += [  # a device left out of a scope's total: a warning, not just a note
            not_measured_flag(k, v).model_copy(update={"severity": "warning"})
            for k, v in devices_not_measured.items()
        ]
        report = EnergyReport(
            window=name,
            duration_s=t1 - t0,
            measurements=measurements,
            gpu_energy_j=totals["gpu"],
            cpu_energy_j=totals["cpu_package"],
            dram_energy_j=totals["dram"],
            not_measured=not_measured,
            meter_selection=plan.selection,
            gpu_update_period_ms_by_device=_periods_ms(plan.nvml_meter),
        )
        self._add_cross_check(report, plan, t0, t1, flags)
        if (
            self.baseline is not None
            and report.gpu_energy_j is not None
            and name != BASELINE_WINDOW
        ):
            report.baseline, flag = adjust_for_idle(
                report.gpu_energy_j, report.duration_s, self.baseline
            )
            flags += [flag] if flag else []
            trend = self.baseline.power_trend_pct
            if self.baseline.settled is False and trend is not None:
                flags.append(baseline_unsettled_flag(trend))
        report.warnings = drop_repeated_flags(flags)
        return report

    def _add_cross_check(
        self, report: EnergyReport, plan: MeterPlan, t0: float, t1: float, flags: list[QualityFlag]
    ) -> None:
        """Polled energy per GPU next to the counter, and the thermal summary."""
        if self.sampler is None:
            return
        timeline = self.sampler.timeline
        polled = {d.key: timeline.polled_energy_j(d.key, t0, t1) for d in plan.gpus}
        report.polled_gpu_energy_j_by_device = {k: v for k, v in polled.items() if v is not None}
        if report.polled_gpu_energy_j_by_device:
            report.polled_gpu_energy_j = sum(report.polled_gpu_energy_j_by_device.values())
        counter = {
            k: v
            for m in report.measurements
            if m.method == "counter" and m.scope == "gpu"
            for k, v in m.energy_j_by_device.items()
        }
        same = [k for k in counter if k in report.polled_gpu_energy_j_by_device]
        counter_j = sum(counter[k] for k in same)
        if same and counter_j > 0:
            polled_j = sum(report.polled_gpu_energy_j_by_device[k] for k in same)
            report.counter_vs_polled_pct = 100.0 * (polled_j - counter_j) / counter_j
        report.thermal = timeline.summarise(t0, t1, self.sample_interval_s)
        flags += thermal_flags(report.thermal, SLOWDOWN_REASONS)
        low = low_sample_flag(report.thermal.sample_count, report.duration_s)
        flags += [low] if low else []


def _sum_scope(measurements: list[Any], scope: str) -> float | None:
    """Total energy of one scope, or None if nothing of that scope was measured."""
    parts = [m.energy_j for m in measurements if m.scope == scope]
    return float(sum(parts)) if parts else None


def _periods_ms(meter: NvmlMeter | None) -> dict[str, float]:
    """Counter update periods found at start-up, ms."""
    if meter is None:
        return {}
    return {k: v * 1000.0 for k, v in meter.update_period_s.items() if v is not None}
