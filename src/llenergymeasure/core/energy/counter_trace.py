"""Counter trace: the NVML energy counter read every few ms while a window is open.

Energy by phase (``phases.py``) needs to know *when* the counter stepped inside the window,
not only its value at the edges (docs/measurement.md section 14). A small ``spawn`` process
(the *tracer*, separate from the 100 ms telemetry sampler, so neither slows the other) reads
``nvmlDeviceGetTotalEnergyConsumption`` of the GPUs in use back to back with random gaps:

- the mean start-to-start interval is ``interval_s`` (from the sensor profile: a 25th of the
  counter's update period, ~4 ms at 100 ms); each gap is drawn uniformly so that the reads
  are dithered against the counter's own clock (``intervals.py`` says why); a read that costs
  more than the interval is followed by a short random gap (0-0.5 ms) instead;
- the tracer reads only between ``begin()`` and ``end()`` (it blocks on its pipe otherwise,
  costing nothing): ``begin()`` returns once every traced GPU's counter has stepped (so an
  interval brackets the window's start, up to one counter period of waiting before the
  window), ``end(t)`` returns once each counter has stepped after ``t`` (after the window);
- of all reads only the two around each counter step are kept (the last read with the old
  value and the first with the new one: that is all ``counter_intervals`` uses), so a trace
  is ~20 reads per second and GPU whatever the window's length;
- when the sensor profile trusts a fine power field (``power_instant``), the tracer reads it
  too, every ``fine_interval_s``, for the second estimate (``phases.fine_signal_estimate``).

Every read is stamped with ``time.monotonic()`` at its start and its duration. The cost of a
read (~3.5 ms on an H100) is the reason the telemetry sampler never reads the counter; the
tracer's cost on the workload is measured per GPU model (``SensorProfile.counter_trace_cost``,
``benchmarks/gpu_phase_energy.py``) and decides whether ``telemetry.phase_energy: auto``
turns it on. No numpy here: the trace crosses the pipe as lists of floats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from llenergymeasure.core.energy._nvml import NvmlError, nvml
from llenergymeasure.core.energy.piped_child import PipedChild
from llenergymeasure.core.energy.sensor_profiles import PhaseMethodChoice
from llenergymeasure.domain.phases import SensorProfile
from llenergymeasure.exceptions import MeterError
from llenergymeasure.lifeline import die_with_parent

DEFAULT_INTERVAL_S = 0.004
MIN_GAP_S = 0.0005  # gaps drawn from [0, this] when a read costs more than the interval
END_TIMEOUT_S = 1.0  # how long end() waits for a step after the window before giving up
FINE_READERS: dict[str, Callable[[Any], float]] = {
    "power_instant": nvml.power_instant_w,
    "power_usage": nvml.power_w,
}


@dataclasses.dataclass(frozen=True)
class PhaseTraceSettings:
    """What the energy session is asked to do about the counter trace.

    ``mode``: ``auto`` (trace where the GPU model's sensor profile shows it is free), ``on``,
    ``off``; ``off_reason``: why the caller turned it off (said in the result); ``profiles``:
    sensor profiles by GPU model (None: the bundled ``sensor_profiles.json``).
    """

    mode: str = "auto"
    off_reason: str | None = None
    profiles: dict[str, SensorProfile] | None = None


@dataclasses.dataclass(frozen=True)
class TraceSource:
    """Picklable description of what the tracer reads (``fake``: an NVML stand-in)."""

    nvml_indices: tuple[int, ...]
    interval_s: float = DEFAULT_INTERVAL_S
    fine_signal: str | None = None
    fine_interval_s: float = 0.01
    seed: int = 0
    fake: Any = None


@dataclasses.dataclass
class DeviceTrace:
    """One GPU's trace over a window: the kept counter reads, the fine power reads."""

    device: str
    t_s: list[float] = dataclasses.field(default_factory=list)  # read starts
    read_s: list[float] = dataclasses.field(default_factory=list)  # read durations
    energy_mj: list[int] = dataclasses.field(default_factory=list)
    n_reads: int = 0
    read_s_sum: float = 0.0
    first_t_s: float | None = None
    last_t_s: float | None = None
    steps: int = 0
    last_step_lo_s: float | None = None  # start of the last read before the latest step
    fine_t_s: list[float] = dataclasses.field(default_factory=list)
    fine_read_s: list[float] = dataclasses.field(default_factory=list)
    fine_w: list[float] = dataclasses.field(default_factory=list)
    _prev: tuple[float, float, int] | None = None
    _prev_kept: bool = False

    def add(self, t_s: float, read_s: float, value: int) -> None:
        """One counter read; kept only next to a change of value (and the first)."""
        self.n_reads += 1
        self.read_s_sum += read_s
        self.last_t_s = t_s
        prev, kept = self._prev, False
        if prev is None:
            self.first_t_s = t_s
            kept = True
        elif value != prev[2]:
            if not self._prev_kept:
                self._keep(prev)
            self.steps += 1
            self.last_step_lo_s = prev[0]
            kept = True
        if kept:
            self._keep((t_s, read_s, value))
        self._prev, self._prev_kept = (t_s, read_s, value), kept

    def close(self) -> None:
        """Keep the last read too (the end of the trace)."""
        if self._prev is not None and not self._prev_kept:
            self._keep(self._prev)
            self._prev_kept = True

    def _keep(self, read: tuple[float, float, int]) -> None:
        self.t_s.append(read[0])
        self.read_s.append(read[1])
        self.energy_mj.append(read[2])

    @property
    def mean_interval_s(self) -> float | None:
        """Mean start-to-start gap between reads."""
        if self.n_reads < 2 or self.first_t_s is None or self.last_t_s is None:
            return None
        return (self.last_t_s - self.first_t_s) / (self.n_reads - 1)

    @property
    def mean_read_s(self) -> float | None:
        return self.read_s_sum / self.n_reads if self.n_reads else None


@dataclasses.dataclass
class WindowTrace:
    """The traces of one window, with the window's edges (time.monotonic) and how read."""

    window: tuple[float, float]
    devices: dict[str, DeviceTrace]
    interval_s: float
    fine_signal: str | None = None
    fine_interval_s: float | None = None
    choice: PhaseMethodChoice | None = None  # what the GPU model's sensor profile chose
    notes: list[str] = dataclasses.field(default_factory=list)


# --- the tracer process -------------------------------------------------------------------
def run_tracer(source: TraceSource, conn: Connection) -> None:
    """Child process entry point: wait for ``begin``, trace until ``end``, repeat."""
    die_with_parent()
    try:
        if source.fake is not None:
            nvml.lib = source.fake
        nvml.init()
        handles = [(f"gpu:{i}", nvml.handle_by_index(i)) for i in source.nvml_indices]
        for _, handle in handles:
            nvml.total_energy_mj(handle)  # the counter is there (else: error now, not later)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    rng = random.Random(source.seed)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message != "begin":
            return  # "stop"
        traces = _trace_window(source, handles, conn, rng)
        if traces is None:
            return
        try:
            conn.send(("trace", traces))
        except (EOFError, OSError):
            return


def _trace_window(
    source: TraceSource, handles: list[tuple[str, Any]], conn: Connection, rng: random.Random
) -> dict[str, DeviceTrace] | None:
    """Read until the parent's ``("end", t)`` and a step after t (None: the parent left)."""
    traces = {key: DeviceTrace(key) for key, _ in handles}
    fine = FINE_READERS.get(source.fine_signal or "")
    started = False
    end_at: float | None = None
    deadline = 0.0
    next_fine = time.monotonic()
    read_cost = 0.0
    while True:
        for key, handle in handles:
            t0 = time.monotonic()
            try:
                value = nvml.total_energy_mj(handle)
            except NvmlError:
                continue
            dt = time.monotonic() - t0
            traces[key].add(t0, dt, value)
            read_cost = dt if read_cost == 0.0 else 0.9 * read_cost + 0.1 * dt
        if fine is not None and time.monotonic() >= next_fine:
            _read_fine(fine, handles, traces)
            next_fine = max(next_fine + source.fine_interval_s, time.monotonic())
        if not started and all(tr.steps for tr in traces.values()):
            started = True
            conn.send(("started", None))
        if end_at is not None and (
            time.monotonic() > deadline
            or all((tr.last_step_lo_s or 0.0) >= end_at for tr in traces.values())
        ):
            for tr in traces.values():
                tr.close()
            return traces
        spare = source.interval_s - read_cost * len(handles)
        gap = rng.uniform(0.0, 2.0 * spare if spare > MIN_GAP_S else MIN_GAP_S)
        try:
            if conn.poll(gap):
                message = conn.recv()
                if isinstance(message, tuple) and message[0] == "end":
                    end_at, deadline = float(message[1]), time.monotonic() + END_TIMEOUT_S
                else:
                    return None  # "stop" mid-window: nothing to send
        except (EOFError, OSError):
            return None


def _read_fine(
    fine: Callable[[Any], float], handles: list[tuple[str, Any]], traces: dict[str, DeviceTrace]
) -> None:
    """One read of the fine power field per GPU."""
    for key, handle in handles:
        t0 = time.monotonic()
        try:
            watts = fine(handle)
        except NvmlError:
            continue
        tr = traces[key]
        tr.fine_t_s.append(t0)
        tr.fine_read_s.append(time.monotonic() - t0)
        tr.fine_w.append(watts)


class CounterTracer(PipedChild):
    """Parent-side handle of the tracer process (ready: it has read every counter once)."""

    label = "Counter tracer"
    process_name = "llem-counter-tracer"

    def __init__(
        self, source: TraceSource, start_timeout_s: float = 60.0, reply_timeout_s: float = 10.0
    ) -> None:
        super().__init__(start_timeout_s, reply_timeout_s)
        self.source = source
        self._tracing = False

    def _child(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return run_tracer, (self.source,)

    def begin(self, timeout_s: float = 2.0) -> bool:
        """Start tracing; True once every counter has stepped (False: none within timeout)."""
        self.wait_started()
        if not self.running or self._conn is None:
            raise MeterError("Counter tracer is not running")
        self._conn.send("begin")
        self._tracing = True
        try:
            ready = self._conn.poll(timeout_s)
        except (EOFError, OSError) as e:
            self._reap()
            raise MeterError("Counter tracer died at begin") from e
        if ready:
            kind, _ = self._receive(self.reply_timeout_s, "begin")
            return kind == "started"
        return False

    def end(self, t_end_s: float) -> dict[str, DeviceTrace]:
        """Stop tracing once every counter has stepped after ``t_end_s``; the traces."""
        if not self._tracing or self._conn is None:
            raise MeterError("Counter tracer: end() without begin()")
        self._tracing = False
        self._conn.send(("end", t_end_s))
        while True:
            kind, payload = self._receive(self.reply_timeout_s + END_TIMEOUT_S, "end")
            if kind == "trace":
                traces: dict[str, DeviceTrace] = payload
                return traces
            # a late "started" from a begin() that timed out: skip it

    def stop(self) -> None:
        """End the child (join, terminate if it hangs)."""
        if self.running and self._conn is not None:
            with contextlib.suppress(OSError, EOFError):
                self._conn.send("stop")
        self._reap()

    def _reap(self) -> None:
        super()._reap()
        self._tracing = False
