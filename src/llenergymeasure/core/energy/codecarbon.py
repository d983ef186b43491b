"""CodeCarbon meter: energy through ``codecarbon``'s task API (pip extra ``codecarbon``).

Scopes and methods as labelled here: ``gpu`` -> ``counter`` (CodeCarbon reads the NVML
energy counter in recent versions), ``cpu_package`` -> ``estimate`` and ``dram`` ->
``estimate`` (CodeCarbon uses RAPL where readable but otherwise a TDP model, and models RAM
power from its size; it does not say which, so we label both as estimates). CodeCarbon
reports kWh summed over devices: there is no per-device breakdown (key ``<scope>:all``).

Single NVML owner: when CodeCarbon measures, the session does not start the NVML meter or the
telemetry sampler. Imported lazily; a missing package raises ``MeterError`` naming the extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from llenergymeasure.core.energy.protocol import WindowBook, WindowReading
from llenergymeasure.core.energy.quality import estimate_flag
from llenergymeasure.domain.energy import EnergyMeasurement, Method, Scope
from llenergymeasure.exceptions import MeterError

INSTALL_HINT = 'pip install "llenergymeasure[codecarbon]"'
J_PER_KWH = 3.6e6
_FIELDS: tuple[tuple[str, Scope, Method], ...] = (
    ("gpu_energy", "gpu", "counter"),
    ("cpu_energy", "cpu_package", "estimate"),
    ("ram_energy", "dram", "estimate"),
)


def codecarbon_available() -> bool:
    """True if ``codecarbon`` can be imported (never raises)."""
    try:
        importlib.import_module("codecarbon")
    except Exception:
        return False
    return True


class CodeCarbonMeter:
    """Energy windows delegated to CodeCarbon's tracker tasks."""

    scopes: tuple[Scope, ...] = tuple(scope for _, scope, _ in _FIELDS)
    per_device = False  # CodeCarbon sums over devices: one <scope>:all figure each

    def __init__(self, gpu_ids: list[int] | None = None) -> None:
        self.name = "codecarbon"
        self.gpu_ids = gpu_ids
        self._tracker: Any = None
        self._book = WindowBook(self.name)

    def start(self) -> None:
        """Create and start an offline tracker (no network, no files)."""
        if self._tracker is not None:
            return
        try:
            cc = importlib.import_module("codecarbon")
        except ImportError as e:
            raise MeterError(f"energy_backend 'codecarbon' needs CodeCarbon: {INSTALL_HINT}") from e
        try:
            self._tracker = cc.OfflineEmissionsTracker(
                country_iso_code="USA", save_to_file=False, log_level="error", gpu_ids=self.gpu_ids
            )
            self._tracker.start()
        except Exception as e:
            raise MeterError(f"CodeCarbon could not start: {e}. Try energy_backend: nvml.") from e

    def begin_window(self, name: str) -> None:
        """Start a CodeCarbon task named ``name``."""
        if self._tracker is None:
            raise MeterError("CodeCarbonMeter.begin_window called before start().")
        self._book.open(name, None)
        self._tracker.start_task(name)

    def end_window(self, name: str) -> WindowReading:
        """Stop the task; convert kWh to J per scope."""
        self._book.close(name)
        data = self._tracker.stop_task(name)
        duration_s = float(getattr(data, "duration", 0.0))
        reading = WindowReading()
        for attr, scope, method in _FIELDS:
            kwh = getattr(data, attr, None)
            if kwh is None:
                continue
            reading.measurements.append(
                EnergyMeasurement.from_devices(
                    meter=self.name,
                    window=name,
                    scope=scope,
                    method=method,
                    energy_j_by_device={f"{scope}:all": float(kwh) * J_PER_KWH},
                    duration_s=duration_s,
                    warnings=["measured by CodeCarbon"],
                )
            )
            if method == "estimate":
                reading.flags.append(
                    estimate_flag(scope, "CodeCarbon's model (RAPL or TDP/RAM-size)")
                )
        return reading

    def stop(self) -> None:
        """Stop the tracker."""
        if self._tracker is not None:
            try:
                self._tracker.stop()
            finally:
                self._tracker = None
