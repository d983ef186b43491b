"""Zeus meter: GPU energy through ``zeus.monitor.ZeusMonitor`` (pip extra ``zeus``).

Method ``counter`` (Zeus reads the NVML energy counter on Volta+ and polls power on older
GPUs; it does not say which per window, so pre-Volta results are labelled ``counter`` too:
documented limitation), scope ``gpu``, keyed ``gpu:<nvml index>``.

Single NVML owner: when Zeus measures, the session starts neither the NVML meter nor the
telemetry sampler, so no two pollers read the same GPUs (the thermal summary is then absent).
Zeus is imported lazily; if it is missing, ``MeterError`` names the pip extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from llenergymeasure.core.energy.nvml import GpuDevice
from llenergymeasure.core.energy.protocol import WindowBook, WindowReading
from llenergymeasure.domain.energy import EnergyMeasurement, Scope
from llenergymeasure.exceptions import MeterError

INSTALL_HINT = 'pip install "llenergymeasure[zeus]"'


def zeus_available() -> bool:
    """True if ``zeus.monitor`` can be imported (never raises)."""
    try:
        importlib.import_module("zeus.monitor")
    except Exception:
        return False
    return True


class ZeusMeter:
    """GPU energy windows delegated to ZeusMonitor."""

    scopes: tuple[Scope, ...] = ("gpu",)
    per_device = True

    def __init__(self, devices: Sequence[GpuDevice], cuda_ordinals: Sequence[int]) -> None:
        self.name = "zeus"
        self.devices = list(devices)
        self.cuda_ordinals = list(cuda_ordinals)  # Zeus indexes GPUs within CUDA_VISIBLE_DEVICES
        self._monitor: Any = None
        self._book = WindowBook(self.name)

    def start(self) -> None:
        """Create the ZeusMonitor (imports zeus)."""
        if self._monitor is not None:
            return
        try:
            monitor_mod = importlib.import_module("zeus.monitor")
        except ImportError as e:
            raise MeterError(f"energy_backend 'zeus' needs Zeus: {INSTALL_HINT}") from e
        try:
            self._monitor = monitor_mod.ZeusMonitor(gpu_indices=self.cuda_ordinals)
        except Exception as e:
            raise MeterError(f"Zeus could not start: {e}. Try energy_backend: nvml.") from e

    def _call(self, method: str, name: str) -> Any:
        """begin/end_window without Zeus syncing torch (the caller synchronises)."""
        fn = getattr(self._monitor, method)
        try:
            return fn(name, sync_execution=False)
        except TypeError:
            return fn(name)

    def begin_window(self, name: str) -> None:
        """Open a Zeus window."""
        if self._monitor is None:
            raise MeterError("ZeusMeter.begin_window called before start().")
        self._book.open(name, None)
        self._call("begin_window", name)

    def end_window(self, name: str) -> WindowReading:
        """Close the Zeus window; map Zeus's CUDA ordinals back to NVML keys."""
        self._book.close(name)
        result = self._call("end_window", name)
        by_ordinal = dict(getattr(result, "gpu_energy", {}) or {})
        energy = {
            dev.key: float(by_ordinal[ordinal])
            for ordinal, dev in zip(self.cuda_ordinals, self.devices, strict=False)
            if ordinal in by_ordinal
        }
        return WindowReading(
            measurements=[
                EnergyMeasurement.from_devices(
                    meter=self.name,
                    window=name,
                    scope="gpu",
                    method="counter",
                    energy_j_by_device=energy,
                    duration_s=float(result.time),
                    warnings=["measured by Zeus (counter on Volta+, polled power on older GPUs)"],
                )
            ]
        )

    def stop(self) -> None:
        """Drop the monitor."""
        self._monitor = None
