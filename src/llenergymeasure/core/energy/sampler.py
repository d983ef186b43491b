"""Telemetry sampler: power, temperature, clocks, memory, utilisation, throttle reasons.

It runs in a separate process (``multiprocessing`` spawn context) so that it never competes
for the GIL with a CPU-bound decode loop (a Python sampler thread at 1-10 ms cut batch-1
``generate`` throughput by up to ~40 % in one trial on an H100). The child sleeps until each
tick by waiting on its end of a pipe (``Connection.poll(timeout)``): no busy-wait. The parent
talks to it over that pipe:

  - ``"flush"``: take one sample now, send everything not yet sent;
  - ``"stop"``: take a last sample, send the rest, exit.

The child dies with the process that started it (`lifeline.die_with_parent`: the Linux
parent-death signal), so a killed experiment never leaves a sampler polling the GPU.

Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC is system-wide on Linux, so parent and
child agree) plus ``time.time()`` for plots.

What is sampled comes from a picklable ``SampleSource`` (``open()`` in the child returns a
zero-argument read function). ``NvmlSampleSource`` reads NVML; it can carry the NVML
library installed in the parent (``nvml.installed_lib()``, e.g. a ``testing.FakeNVML``) to
install in the child. The sampler never reads the energy counter
(one read costs ~3.5 ms): the meter does that at window edges.

Samples wait in the child until the parent asks (the session flushes at every window edge);
a very long window (hours, many GPUs) therefore holds its samples in the child's memory
(~1 KB per GPU per tick) until the window ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from llenergymeasure.core.energy._nvml import NvmlError, NvmlNotSupported, nvml
from llenergymeasure.core.energy.piped_child import PipedChild
from llenergymeasure.core.energy.timeline import Timeline
from llenergymeasure.exceptions import MeterError
from llenergymeasure.lifeline import die_with_parent

ReadFn = Callable[[], list[dict[str, Any]]]


class SampleSource(Protocol):
    """Picklable description of what to sample; ``open()`` runs in the sampler process."""

    def open(self) -> ReadFn:
        """Acquire the hardware and return a function that takes one sample (rows)."""
        ...


@dataclasses.dataclass(frozen=True)
class NvmlSampleSource:
    """Sample the given NVML indices; ``fake`` (a library installed in place of pynvml in
    the parent, see ``nvml.installed_lib()``; picklable) replaces pynvml in the child."""

    nvml_indices: tuple[int, ...]
    fake: Any = None

    def open(self) -> ReadFn:
        """Init NVML in this process and return the sampling function."""
        if self.fake is not None:
            nvml.lib = self.fake
        nvml.init()
        handles = {f"gpu:{i}": nvml.handle_by_index(i) for i in self.nvml_indices}
        return _NvmlReader(handles).read


class _NvmlReader:
    """Reads one sample per device; a field that is not supported is not asked again."""

    FIELDS: dict[str, Callable[[Any], Any]] = {
        "power_w": nvml.power_w,
        "power_instant_w": nvml.power_instant_w,
        "temperature_c": nvml.temperature_c,
        "sm_clock_mhz": nvml.sm_clock_mhz,
        "memory_used_mb": lambda h: nvml.memory_mb(h)[0],
        "utilisation_pct": nvml.utilisation_pct,
        "throttle_mask": nvml.throttle_reasons,
    }

    def __init__(self, handles: dict[str, Any]) -> None:
        self.handles = handles
        self.unsupported: set[tuple[str, str]] = set()

    def read(self) -> list[dict[str, Any]]:
        """One row per device, stamped with both clocks."""
        rows = []
        for key, handle in self.handles.items():
            row: dict[str, Any] = {"t_s": time.monotonic(), "t_unix_s": time.time(), "device": key}
            for field, fn in self.FIELDS.items():
                row[field] = self._field(key, field, fn, handle)
            rows.append(row)
        return rows

    def _field(self, key: str, field: str, fn: Callable[[Any], Any], handle: Any) -> Any:
        """One field's value, or None (remembering NotSupported)."""
        if (key, field) in self.unsupported:
            return None
        try:
            return fn(handle)
        except NvmlNotSupported:
            self.unsupported.add((key, field))
        except NvmlError:
            pass
        return None


def run_sampler(source: SampleSource, interval_s: float, conn: Connection) -> None:
    """Child process entry point (top level so that spawn can import it)."""
    die_with_parent()
    try:
        read = source.open()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    buffer: list[dict[str, Any]] = []
    next_tick = time.monotonic()
    while True:
        buffer.extend(_safe(read))
        next_tick += interval_s
        if next_tick < time.monotonic():  # fell behind: skip missed ticks, do not burst
            next_tick = time.monotonic() + interval_s
        while (timeout := next_tick - time.monotonic()) > 0:
            try:
                if not conn.poll(timeout):
                    break
                message = conn.recv()
            except (EOFError, OSError):
                return  # the parent went away: nothing left to report to
            buffer.extend(_safe(read))
            conn.send(("samples", buffer))
            buffer = []
            if message == "stop":
                return


def _safe(read: ReadFn) -> list[dict[str, Any]]:
    """A sample, or nothing if the read failed as a whole (the next tick tries again)."""
    try:
        return read()
    except Exception:
        return []


class TelemetrySampler(PipedChild):
    """Parent-side handle of the sampler process, holding the timeline it has sent back."""

    label = "Telemetry sampler"
    process_name = "llem-telemetry-sampler"

    def __init__(
        self,
        source: SampleSource,
        interval_s: float = 0.1,
        start_timeout_s: float = 60.0,
        reply_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(start_timeout_s, reply_timeout_s)
        self.source = source
        self.interval_s = interval_s
        self.timeline = Timeline()

    def _child(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return run_sampler, (self.source, self.interval_s)

    def flush(self) -> None:
        """Ask the child for one sample now and everything it has not yet sent."""
        self._request("flush")

    def _request(self, message: str) -> None:
        """Send a request, store the samples that come back."""
        if not self.running or self._conn is None:
            return
        self.wait_started()
        self._conn.send(message)
        kind, rows = self._receive(self.reply_timeout_s, message)
        if kind == "samples":
            self.timeline.extend(rows)

    def polled_energy_j(self, device_key: str, t0_s: float, t1_s: float) -> float | None:
        """Trapezoid energy over [t0, t1] for one device (flushes if samples lag t1)."""
        last = self.timeline.last_t_s()
        if last is None or last < t1_s:
            self.flush()
        return self.timeline.polled_energy_j(device_key, t0_s, t1_s)

    def stop(self) -> None:
        """Collect the last samples and end the child (join, terminate if it hangs)."""
        if self.running:
            with contextlib.suppress(MeterError):
                self._request("stop")
        self._reap()
