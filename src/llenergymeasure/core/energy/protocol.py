"""The meter interface: named measurement windows.

A meter measures one or more scopes (gpu, cpu_package, dram). ``begin_window(name)`` marks
the start of a named window; ``end_window(name)`` returns a ``WindowReading``: the
measurements (per-device joules, duration, method, scope, warnings), the scopes or devices it
could not measure (with a reason: never a silent zero), and quality flags. Windows may nest
or overlap as long as their names differ.

Each meter declares what it measures, so that callers never match meters by name:
``scopes`` (the scopes its windows measure; empty for a meter that measures nothing) and
``per_device`` (True when energy is broken down per device, ``gpu:<nvml index>``,
``cpu:package-<n>``, ``dram:<n>``; False when it is one total per scope, ``<scope>:all``).

The caller synchronises the accelerator before ``begin_window`` and ``end_window``; meters
never import torch.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

from llenergymeasure.domain.energy import EnergyMeasurement, NotMeasured, QualityFlag, Scope


@dataclasses.dataclass
class WindowReading:
    """What one meter says about one window.

    ``edges_s``: (start, end) of the window on the meter's clock where the meter knows them
    better than its caller (the NVML meter: the middle of its counter reads at each edge);
    None otherwise. The session takes these as the window's edges.
    """

    measurements: list[EnergyMeasurement] = dataclasses.field(default_factory=list)
    not_measured: list[NotMeasured] = dataclasses.field(default_factory=list)
    flags: list[QualityFlag] = dataclasses.field(default_factory=list)
    edges_s: tuple[float, float] | None = None


@runtime_checkable
class EnergyMeter(Protocol):
    """A meter with named windows. ``start``/``stop`` bracket its whole life."""

    name: str
    scopes: tuple[Scope, ...]  # what its windows measure (when the hardware allows)
    per_device: bool  # energy per device (True) or one total per scope (False)

    def start(self) -> None:
        """Acquire the hardware (e.g. NVML init, probes). Idempotent."""
        ...

    def begin_window(self, name: str) -> None:
        """Start the window ``name`` (raises MeterError if it is already open)."""
        ...

    def end_window(self, name: str) -> WindowReading:
        """End the window ``name`` and return what was measured."""
        ...

    def stop(self) -> None:
        """Release the hardware. Idempotent."""
        ...


class WindowBook:
    """Bookkeeping of open windows shared by meters: name -> whatever the meter stored."""

    def __init__(self, meter: str) -> None:
        self.meter = meter
        self._open: dict[str, object] = {}

    def open(self, name: str, state: object) -> None:
        """Record the start state of window ``name``."""
        from llenergymeasure.exceptions import MeterError

        if name in self._open:
            raise MeterError(
                f"{self.meter}: window {name!r} is already open; end it or use another name."
            )
        self._open[name] = state

    def close(self, name: str) -> object:
        """Remove and return the start state of window ``name``."""
        from llenergymeasure.exceptions import MeterError

        if name not in self._open:
            raise MeterError(f"{self.meter}: no open window {name!r}; call begin_window first.")
        return self._open.pop(name)
