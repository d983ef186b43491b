"""EnergySession: the energy layer's one entry point for the orchestrator.

    session = EnergySession(energy_backend="auto", timeline_path=path, baseline=BaselineSettings())
    session.start()                          # meters chosen, NVML probed, sampler launched
    baseline = session.measure_baseline()    # IdleBaseline | None (cached by GPU UUIDs, TTL)
    session.begin_window("measure", sync=torch.cuda.synchronize)
    ...                                      # inference only
    report = session.end_window("measure", sync=torch.cuda.synchronize)   # EnergyReport
    session.stop()                           # sampler down, timeline parquet written

The caller synchronises the device (``sync`` hook) so that the window edges bracket the GPU
work; this module never imports torch.

With ``phase_trace`` (``counter_trace.PhaseTraceSettings``) the session also decides, at
``start()``, whether a counter tracer reads the energy counter every few ms during each
window (single GPU with the NVML counter; ``auto``: where the GPU model's sensor profile
shows the trace is free) and launches the tracer process without waiting for it (its
start overlaps the baseline and warm-up; the first traced window waits for it, and a tracer
that failed to start leaves that window untraced, with the reason). ``window_trace(name)``
returns a window's trace for the phase attribution, which runs after the window. Without a trace each report carries
``phases`` / ``per_request`` saying why they are not measured.
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
from llenergymeasure.core.energy.counter_trace import (
    DEFAULT_INTERVAL_S,
    CounterTracer,
    PhaseTraceSettings,
    TraceSource,
    WindowTrace,
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
from llenergymeasure.core.energy.sensor_profiles import (
    TRACE_READS_PER_PERIOD,
    PhaseMethodChoice,
    choose_method,
    profile_for,
    trace_is_free,
)
from llenergymeasure.domain.energy import EnergyReport, IdleBaseline, QualityFlag
from llenergymeasure.domain.phases import PerRequestEnergy, PhaseEnergyReport
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
        phase_trace: PhaseTraceSettings | None = None,
        probe_in_background: bool = False,
    ) -> None:
        """``probe_in_background``: the NVML meter's counter update probe runs on while the
        run goes on, until the first window (:class:`NvmlMeter`)."""
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
        self.phase_trace = phase_trace
        self.probe_in_background = probe_in_background
        self.tracer: CounterTracer | None = None
        self.trace_choice: PhaseMethodChoice | None = None
        self.trace_off_reason: str | None = None  # why no window is traced
        self.traces: dict[str, WindowTrace] = {}
        self._tracing: set[str] = set()

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
        if plan.nvml_meter is not None:
            plan.nvml_meter.probe_in_background = self.probe_in_background
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
        if self.phase_trace is not None:
            self._start_tracer(plan)
        return self

    def _start_tracer(self, plan: MeterPlan) -> None:
        """Start the counter tracer when asked and possible; else record why not."""
        source, self.trace_off_reason = self._trace_source(plan)
        if source is None:
            return
        tracer = CounterTracer(source)
        try:
            # not waited for here: it gets ready during baseline and warm-up (_begin_trace)
            tracer.launch()
        except OSError as e:
            self.trace_off_reason = f"the counter tracer did not start: {e}"
            return
        self.tracer = tracer

    def _trace_source(self, plan: MeterPlan) -> tuple[TraceSource | None, str | None]:
        """What the tracer reads (None with the reason when nothing is traced)."""
        settings = self.phase_trace
        assert settings is not None
        meter = plan.nvml_meter
        if settings.mode == "off":
            return None, settings.off_reason or "telemetry.phase_energy: off"
        if meter is None or not plan.gpus:
            if not plan.gpus:
                return None, "no GPU energy counter: no GPU in use"
            return None, f"no GPU energy counter: energy measured by {plan.selection.meters}"
        if len(plan.gpus) != 1:
            return None, (
                f"{len(plan.gpus)} GPUs in use: energy by phase covers single-GPU runs so far"
            )
        dev = plan.gpus[0]
        if not meter.counter_supported.get(dev.key):
            return None, f"no GPU energy counter on {dev.key} ({dev.name})"
        profile = profile_for(dev.name, settings.profiles)
        if settings.mode == "auto":
            free, why = trace_is_free(profile)
            if not free:
                return None, f"telemetry.phase_energy: auto, not traced: {why}"
        self.trace_choice = choice = choose_method(profile)
        interval = choice.counter_trace_interval_s
        probed = meter.update_period_s.get(dev.key)
        if interval is None:
            interval = probed / TRACE_READS_PER_PERIOD if probed else DEFAULT_INTERVAL_S
        fine_interval = 0.01
        if choice.fine_signal is not None:
            period = profile.signal(choice.fine_signal).update_period_s
            fine_interval = max(0.002, period / 2) if period else 0.01
        source = TraceSource(
            (dev.nvml_index,), interval_s=interval, fine_signal=choice.fine_signal,
            fine_interval_s=fine_interval, fake=nvml.installed_lib(),
        )  # fmt: skip
        return source, None

    def window_trace(self, name: str) -> WindowTrace | None:
        """The counter trace of window ``name`` (None: not traced; ``trace_off_reason``)."""
        return self.traces.get(name)

    def _start_sampler(self, plan: MeterPlan, meter: NvmlMeter) -> None:
        """Launch telemetry without waiting: its process start (about a second) overlaps
        baseline and warm-up; the first window waits for it (:meth:`_sampler_ready`)."""
        sampler = TelemetrySampler(self._sample_source(plan), self.sample_interval_s)
        try:
            sampler.launch()
        except (OSError, MeterError) as e:
            self._sampler_failed(e)
            return
        self.sampler = sampler
        meter.polled = sampler

    def _sampler_ready(self) -> None:
        """Wait for the launched sampler; if it could not start, measure without it and say so."""
        if self.sampler is None:
            return
        try:
            self.sampler.wait_started()
        except MeterError as e:
            self.sampler.stop()
            self.sampler = None
            plan = self._require_plan()
            if plan.nvml_meter is not None:
                plan.nvml_meter.polled = None
            self._sampler_failed(e)

    def _sampler_failed(self, error: Exception) -> None:
        self.session_flags.append(
            QualityFlag(
                code="sampler_unavailable",
                message=(
                    "Telemetry sampler did not start, so there is no timeline, thermal summary "
                    "or polled cross-check (counter energy is unaffected). With the spawn start "
                    'method the main script needs an `if __name__ == "__main__":` guard. '
                    f"Cause: {str(error).strip().splitlines()[-1]}"
                ),
            )
        )

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
        if self.tracer is not None:
            self.tracer.stop()
            self.tracer = None
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
        self._begin_trace(name)
        self._sampler_ready()
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
        self._end_trace(name, t0, t1)
        if self.sampler is not None:
            self.sampler.flush()
        return t0, t1, readings

    def _begin_trace(self, name: str) -> None:
        """Start the counter trace (waits for one counter step: it brackets the edge)."""
        if self.tracer is None or name == BASELINE_WINDOW:
            return
        try:
            self.tracer.wait_started()
        except MeterError as e:
            self.trace_off_reason = (
                f"the counter tracer did not start: {str(e).strip().splitlines()[-1]}"
            )
            self.tracer.stop()
            self.tracer = None
            return
        try:
            self.tracer.begin()
        except MeterError as e:
            self.trace_off_reason = f"the counter tracer failed: {e}"
            self.tracer = None
            return
        self._tracing.add(name)

    def _end_trace(self, name: str, t0: float, t1: float) -> None:
        """End the trace once the counter stepped after the window (delay included)."""
        if name not in self._tracing or self.tracer is None:
            return
        self._tracing.discard(name)
        choice = self.trace_choice
        delay = choice.counter_delay_s if choice is not None else 0.0
        try:
            devices = self.tracer.end(t1 + delay)
        except MeterError as e:
            self.trace_off_reason = f"the counter tracer failed: {e}"
            self.tracer = None
            return
        source = self.tracer.source
        self.traces[name] = WindowTrace(
            window=(t0, t1), devices=devices, interval_s=source.interval_s,
            fine_signal=source.fine_signal,
            fine_interval_s=source.fine_interval_s if source.fine_signal else None,
            choice=choice,
        )  # fmt: skip

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
        if self.phase_trace is not None and name != BASELINE_WINDOW and name not in self.traces:
            reason = self.trace_off_reason or "no counter trace for this window"
            report.phases = PhaseEnergyReport(window_s=t1 - t0, not_measured=reason)
            report.per_request = PerRequestEnergy(window_s=t1 - t0, not_measured=reason)
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
