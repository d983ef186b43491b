"""NVML GPU energy meter: the total-energy counter read at window edges.

Method and scope:
  - ``counter`` (preferred): ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load,
    Volta and newer) read at both edges of a window, per GPU in use. One read costs ~3.5 ms,
    so it is read only at edges, never in a loop.
  - ``polled`` (fallback): trapezoidal integral of the telemetry sampler's power samples, for
    GPUs without the counter (NVML_ERROR_NOT_SUPPORTED), for a window whose counter went
    backwards (a reset: driver reload, GPU reset), or whose edge read failed.

Limits (flagged, see quality.py):
  - The counter updates in steps (~100 ms on H100), measured per GPU at start-up (or, with
    ``probe_in_background``, while the run goes on until its first window: the probe waits
    for three counter steps, 0.26 s on the H200). A window shorter than one step can read
    0 J; under ~10 steps the quantisation error is > ~10 %.
  - On A100/H100 the power sensor samples only part of the time; prefer windows >= 10 s.
  - MIG: NVML reports power for the whole physical GPU, not the MIG instance.
  - Which GPUs: ``CUDA_VISIBLE_DEVICES`` (indices, ``GPU-``/``MIG-`` UUIDs or UUID prefixes)
    is mapped to NVML handles. Integer entries are CUDA ordinals; CUDA orders devices
    fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML by PCI bus. On machines with
    identical GPUs both agree; with mixed GPUs set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (a warning
    says so). Results are keyed ``gpu:<nvml index>``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from llenergymeasure.core.energy._nvml import NvmlError, NvmlNotSupported, nvml
from llenergymeasure.core.energy.protocol import WindowBook, WindowReading
from llenergymeasure.core.energy.quality import (
    counter_missing_flag,
    counter_reset_flag,
    mig_flag,
    short_window_flags,
)
from llenergymeasure.domain.energy import EnergyMeasurement, NotMeasured, QualityFlag, Scope
from llenergymeasure.exceptions import MeterError


@dataclasses.dataclass(frozen=True)
class GpuDevice:
    """A GPU in use: its NVML identity and whether it is (part of) a MIG GPU."""

    nvml_index: int
    uuid: str
    name: str
    mig: bool = False

    @property
    def key(self) -> str:
        """Key used in per-device results: ``gpu:<nvml index>``."""
        return f"gpu:{self.nvml_index}"


class PolledEnergySource(Protocol):
    """Something that can integrate polled power for a device over [t0, t1] (the sampler)."""

    def polled_energy_j(self, device_key: str, t0_s: float, t1_s: float) -> float | None:
        """Energy from power samples, J, or None if there are too few samples."""
        ...


def parse_cuda_visible_devices(value: str | None) -> list[str] | None:
    """Entries of CUDA_VISIBLE_DEVICES; None when unset (= all GPUs), [] for none."""
    if value is None:
        return None
    entries = [e.strip() for e in value.split(",")]
    out: list[str] = []
    for e in entries:
        if not e or e == "-1" or e.lower() == "nodevfiles":
            break  # CUDA ignores everything from the first invalid entry on
        out.append(e)
    return out


def _handle_for_entry(entry: str, uuids: list[str]) -> Any | None:
    """NVML handle for one CUDA_VISIBLE_DEVICES entry, or None if it names no device."""
    if entry.isdigit():
        return nvml.handle_by_index(int(entry)) if int(entry) < len(uuids) else None
    if entry.startswith("MIG-"):
        try:
            return nvml.parent_of_mig(nvml.handle_by_uuid(entry))
        except NvmlError:
            return None
    matches = [i for i, u in enumerate(uuids) if u.startswith(entry)]
    return nvml.handle_by_index(matches[0]) if len(matches) == 1 else None


def resolve_gpus(
    gpu_indices: Sequence[int] | None = None, environ: dict[str, str] | None = None
) -> list[GpuDevice]:
    """GPUs in use, as NVML devices. NVML must be initialised.

    ``gpu_indices`` are CUDA ordinals (``cuda:0`` ...) within CUDA_VISIBLE_DEVICES; None = all
    visible GPUs.
    """
    env = os.environ if environ is None else environ
    uuids = [nvml.uuid(nvml.handle_by_index(i)) for i in range(nvml.device_count())]
    entries = parse_cuda_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    if entries is None:
        entries = [str(i) for i in range(len(uuids))]
    visible: list[GpuDevice] = []
    for entry in entries:
        handle = _handle_for_entry(entry, uuids)
        if handle is None:
            break  # as CUDA does
        dev = _describe(handle, mig_entry=entry.startswith("MIG-"))
        if all(d.nvml_index != dev.nvml_index for d in visible):
            visible.append(dev)
    if gpu_indices is None:
        return visible
    bad = [i for i in gpu_indices if not 0 <= i < len(visible)]
    if bad:
        raise MeterError(
            f"GPU index(es) {bad} not visible: {len(visible)} GPU(s) visible "
            f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}). Fix `gpus:` in the config."
        )
    return [visible[i] for i in gpu_indices]


def _describe(handle: Any, mig_entry: bool) -> GpuDevice:
    """GpuDevice for a (physical) handle."""
    mig = mig_entry or bool(nvml.optional(nvml.mig_enabled, handle))
    return GpuDevice(nvml.index(handle), nvml.uuid(handle), nvml.name(handle), mig)


def ordering_warning(
    devices: Sequence[GpuDevice], environ: dict[str, str] | None = None
) -> str | None:
    """A warning when CUDA and NVML device orders may differ (mixed GPU models)."""
    env = os.environ if environ is None else environ
    mixed = len({d.name for d in devices}) > 1
    if mixed and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return (
            "Different GPU models are visible and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA "
            "ordinals may not match NVML indices. Set CUDA_DEVICE_ORDER=PCI_BUS_ID."
        )
    return None


def probe_update_period_s(
    handles: dict[str, Any],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    budget_s: float = 0.6,
    interval_s: float = 0.005,
) -> dict[str, float | None]:
    """Counter update period per device: read until the value has changed 3 times (bounded).

    Returns None for a device whose counter changed fewer than twice within ``budget_s``.
    """
    last = {k: nvml.total_energy_mj(h) for k, h in handles.items()}
    changes: dict[str, list[float]] = {k: [] for k in handles}
    deadline = clock() + budget_s
    while clock() < deadline and any(len(c) < 3 for c in changes.values()):
        sleep(interval_s)
        for key, handle in handles.items():
            value = nvml.total_energy_mj(handle)
            if value != last[key]:
                changes[key].append(clock())
                last[key] = value
    return {k: (c[-1] - c[0]) / (len(c) - 1) if len(c) >= 2 else None for k, c in changes.items()}


@dataclasses.dataclass
class _Edge:
    """Counter values (None = unreadable) and time at one window edge."""

    t_s: float
    energy_mj: dict[str, int | None]
    errors: dict[str, str]


class NvmlMeter:
    """GPU energy from the NVML counter, with polled fallback (see module docstring)."""

    scopes: tuple[Scope, ...] = ("gpu",)
    per_device = True

    def __init__(
        self,
        devices: Sequence[GpuDevice],
        polled: PolledEnergySource | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        probe_budget_s: float = 0.6,
        probe_in_background: bool = False,
    ) -> None:
        """``probe_in_background``: :meth:`start` returns without waiting for the update
        period probe; the first window (and any read of :attr:`update_period_s`) waits for
        it, so that no window overlaps the probe's reads."""
        self.name = "nvml"
        self.devices = list(devices)
        self.polled = polled
        self.clock = clock
        self.sleep = sleep
        self.probe_budget_s = probe_budget_s
        self.probe_in_background = probe_in_background
        self._update_period_s: dict[str, float | None] = {}
        self._probe: threading.Thread | None = None
        self._probe_error: Exception | None = None
        self.counter_supported: dict[str, bool] = {}
        self._handles: dict[str, Any] = {}
        self._book = WindowBook(self.name)
        self._started = False

    @property
    def update_period_s(self) -> dict[str, float | None]:
        """Counter update period per GPU with a counter, s (None: fewer than two steps seen
        within the probe's budget); waits for a probe still running."""
        self._join_probe()
        return self._update_period_s

    def start(self) -> None:
        """Init NVML, find which GPUs have the counter, probe its update period (in a
        thread with ``probe_in_background``)."""
        if self._started:
            return
        nvml.init()
        self._started = True
        self._handles = {d.key: nvml.handle_by_index(d.nvml_index) for d in self.devices}
        for key, handle in self._handles.items():
            self.counter_supported[key] = self._counter_works(handle)
        with_counter = {k: h for k, h in self._handles.items() if self.counter_supported[k]}
        if not with_counter:
            return
        if not self.probe_in_background:
            self._update_period_s = self._run_probe(with_counter)
            return
        self._probe = threading.Thread(
            target=self._probe_into_place, args=(with_counter,), name="llem-nvml-probe", daemon=True
        )
        self._probe.start()

    def _run_probe(self, handles: dict[str, Any]) -> dict[str, float | None]:
        return probe_update_period_s(handles, self.clock, self.sleep, self.probe_budget_s)

    def _probe_into_place(self, handles: dict[str, Any]) -> None:
        """The background probe: its periods, or the error it met (raised at the join, where
        the synchronous probe would have raised it from :meth:`start`)."""
        try:
            self._update_period_s = self._run_probe(handles)
        except Exception as e:  # the thread has no caller: the join re-raises it
            self._probe_error = e

    def _join_probe(self, *, raise_error: bool = True) -> None:
        """Wait for a background probe (bounded by its budget and its reads)."""
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.join()
        error, self._probe_error = self._probe_error, None
        if error is not None and raise_error:
            raise error

    @staticmethod
    def _counter_works(handle: Any) -> bool:
        """False if the device has no energy counter."""
        try:
            nvml.total_energy_mj(handle)
            return True
        except NvmlNotSupported:
            return False

    def _read_edge(self) -> _Edge:
        """Read every counter; the edge time is the middle of the reads."""
        t_before = self.clock()
        values: dict[str, int | None] = {}
        errors: dict[str, str] = {}
        for key, handle in self._handles.items():
            values[key] = None
            if self.counter_supported.get(key):
                try:
                    values[key] = nvml.total_energy_mj(handle)
                except NvmlError as e:
                    errors[key] = str(e)
        return _Edge((t_before + self.clock()) / 2.0, values, errors)

    def begin_window(self, name: str) -> None:
        """Read the counters at the start of window ``name``."""
        if not self._started:
            raise MeterError("NvmlMeter.begin_window called before start().")
        self._join_probe()  # no window overlaps the probe's reads
        self._book.open(name, self._read_edge())

    def end_window(self, name: str) -> WindowReading:
        """Read the counters again; counter energy per GPU, polled where the counter failed."""
        start = self._book.close(name)
        assert isinstance(start, _Edge)
        end = self._read_edge()
        duration_s = end.t_s - start.t_s
        reading = WindowReading(flags=self._device_flags(), edges_s=(start.t_s, end.t_s))
        counter_j: dict[str, float] = {}
        fallback: dict[str, str] = {}
        for dev in self.devices:
            key = dev.key
            e0, e1 = start.energy_mj.get(key), end.energy_mj.get(key)
            if e0 is None or e1 is None:
                fallback[key] = self._unreadable_reason(key, start, end)
            elif e1 < e0:
                fallback[key] = f"counter went backwards ({e0} -> {e1} mJ): reset"
                reading.flags.append(counter_reset_flag(key, e0, e1))
            else:
                counter_j[key] = (e1 - e0) / 1000.0
        if counter_j:
            reading.measurements.append(self._measurement(name, "counter", counter_j, duration_s))
            reading.flags.extend(short_window_flags(duration_s, self._periods(counter_j)))
        if fallback:
            self._add_polled(reading, name, fallback, start.t_s, end.t_s)
        return reading

    def _periods(self, keys: dict[str, float]) -> list[float]:
        """Known update periods of the given devices, s."""
        return [p for k in keys if (p := self.update_period_s.get(k)) is not None]

    def _unreadable_reason(self, key: str, start: _Edge, end: _Edge) -> str:
        """Why a device's counter gave no value at an edge."""
        if not self.counter_supported.get(key):
            return "no energy counter (NVML_ERROR_NOT_SUPPORTED)"
        return f"counter read failed: {start.errors.get(key) or end.errors.get(key)}"

    def _device_flags(self) -> list[QualityFlag]:
        """Flags that hold for the whole session: MIG, missing counters."""
        flags = [mig_flag(d.key) for d in self.devices if d.mig]
        flags += [counter_missing_flag(k) for k, ok in self.counter_supported.items() if not ok]
        return flags

    def _measurement(
        self,
        window: str,
        method: Any,
        energy_j: dict[str, float],
        duration_s: float,
        note: str = "",
    ) -> EnergyMeasurement:
        """One EnergyMeasurement of GPU scope."""
        return EnergyMeasurement.from_devices(
            meter=self.name,
            window=window,
            scope="gpu",
            method=method,
            energy_j_by_device=energy_j,
            duration_s=duration_s,
            warnings=[note] if note else [],
        )

    def _add_polled(
        self, reading: WindowReading, window: str, why: dict[str, str], t0_s: float, t1_s: float
    ) -> None:
        """Polled energy for the devices in ``why``; not-measured where there are no samples."""
        polled_j: dict[str, float] = {}
        for key, reason in why.items():
            value = None if self.polled is None else self.polled.polled_energy_j(key, t0_s, t1_s)
            if value is None:
                note = "no telemetry sampler running" if self.polled is None else "too few samples"
                reading.not_measured.append(
                    NotMeasured(
                        meter=self.name, scope="gpu", device=key, reason=f"{reason}; {note}"
                    )
                )
            else:
                polled_j[key] = value
        if polled_j:
            note = "; ".join(f"{k}: {why[k]}" for k in polled_j)
            reading.measurements.append(
                self._measurement(window, "polled", polled_j, t1_s - t0_s, note)
            )

    def stop(self) -> None:
        """Release NVML (after a background probe, if one still runs)."""
        self._join_probe(raise_error=False)
        if self._started:
            nvml.shutdown()
            self._started = False
