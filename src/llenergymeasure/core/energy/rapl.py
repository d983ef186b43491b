"""RAPL meter: CPU package and DRAM energy from the Linux powercap interface.

Method ``counter``; scopes ``cpu_package`` and ``dram``. Reads ``energy_uj`` of
``<root>/intel-rapl:N`` zones whose ``name`` is ``package-N`` (AMD Zen exposes its packages
the same way), and of their ``dram`` subzones (``intel-rapl:N:M``). Domains overlap
(psys ⊇ package ⊇ core/uncore), so only packages are summed for the CPU; ``psys``, ``core`` and
``uncore`` are never added. A counter that went down between the edges wrapped at
``max_energy_range_uj``: delta = end + range − start. A window longer than one whole wrap
period (range / power: e.g. 262 kJ at 400 W ≈ 11 min) cannot be told apart and is flagged.

``energy_uj`` is root-only on kernels patched for CVE-2020-8694 (PLATYPUS); unreadable
counters mean "not measured" with the reason and the fix, never zero.
The root path is injectable (tests write real files under a temporary directory).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from llenergymeasure.core.energy.protocol import WindowBook, WindowReading
from llenergymeasure.domain.energy import EnergyMeasurement, NotMeasured, QualityFlag, Scope

DEFAULT_ROOT = Path("/sys/class/powercap")
# Generous upper bound on package power used only to warn about possible multiple wraps.
WRAP_WARNING_POWER_W = 400.0


@dataclasses.dataclass(frozen=True)
class RaplZone:
    """One counter: where it is, what it covers, and its wrap range."""

    path: Path
    scope: Scope
    key: str  # "cpu:package-0", "dram:0"
    max_energy_range_uj: int


def _read_int(path: Path) -> int:
    """Integer content of a sysfs file."""
    return int(path.read_text().strip())


def discover_zones(root: Path = DEFAULT_ROOT) -> list[RaplZone]:
    """Package zones and their DRAM subzones under ``root`` (psys/core/uncore skipped)."""
    zones: list[RaplZone] = []
    for top in sorted(root.glob("intel-rapl:*")):
        if top.name.count(":") != 1 or not (top / "name").exists():
            continue
        name = (top / "name").read_text().strip()
        if not name.startswith("package"):
            continue  # psys covers packages too: adding it would double count
        n = top.name.split(":")[1]
        zones.append(RaplZone(top, "cpu_package", f"cpu:{name}", _range(top)))
        for sub in sorted(top.glob(f"intel-rapl:{n}:*")):
            if (sub / "name").exists() and (sub / "name").read_text().strip() == "dram":
                zones.append(RaplZone(sub, "dram", f"dram:{n}", _range(sub)))
    return zones


def _range(zone: Path) -> int:
    """max_energy_range_uj of a zone (0 if unreadable: wraps then cannot be corrected)."""
    try:
        return _read_int(zone / "max_energy_range_uj")
    except (OSError, ValueError):
        return 0


def unreadable_reason(zones: list[RaplZone], root: Path = DEFAULT_ROOT) -> str | None:
    """Why RAPL cannot be used here, or None if every zone's counter can be read."""
    if not zones:
        return f"no RAPL package zones under {root}"
    for zone in zones:
        try:
            _read_int(zone.path / "energy_uj")
        except PermissionError:
            return (
                f"permission denied reading {zone.path / 'energy_uj'} (root-only since "
                "CVE-2020-8694); run as root or `sudo chmod o+r "
                f"{root}/intel-rapl:*/energy_uj {root}/intel-rapl:*/*/energy_uj`"
            )
        except (OSError, ValueError) as e:
            return f"cannot read {zone.path / 'energy_uj'}: {e}"
    return None


def delta_uj(start_uj: int, end_uj: int, max_range_uj: int) -> int:
    """Counter difference, correcting one wrap-around."""
    if end_uj >= start_uj:
        return end_uj - start_uj
    return end_uj + max_range_uj - start_uj


class RaplMeter:
    """CPU package + DRAM energy from powercap counters (see module docstring)."""

    scopes: tuple[Scope, ...] = ("cpu_package", "dram")
    per_device = True

    def __init__(
        self, root: Path = DEFAULT_ROOT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = "rapl"
        self.root = root
        self.clock = clock
        self.zones: list[RaplZone] = []
        self.reason: str | None = None
        self._book = WindowBook(self.name)

    def start(self) -> None:
        """Find the zones and check that they can be read."""
        self.zones = discover_zones(self.root)
        self.reason = unreadable_reason(self.zones, self.root)

    def available(self) -> bool:
        """True if RAPL can measure here (call after start())."""
        return self.reason is None

    def _read(self) -> tuple[float, dict[str, int | None]]:
        """Time and each zone's counter (None if unreadable now)."""
        values: dict[str, int | None] = {}
        for z in self.zones:
            try:
                values[z.key] = _read_int(z.path / "energy_uj")
            except (OSError, ValueError):
                values[z.key] = None
        return self.clock(), values

    def begin_window(self, name: str) -> None:
        """Read the counters at the window start."""
        self._book.open(name, self._read())

    def end_window(self, name: str) -> WindowReading:
        """Energy per package and DRAM zone over the window."""
        t0, v0 = cast("tuple[float, dict[str, int | None]]", self._book.close(name))
        t1, v1 = self._read()
        duration_s = t1 - t0
        reading = WindowReading()
        if self.reason is not None:
            for scope in self.scopes:
                reading.not_measured.append(
                    NotMeasured(meter=self.name, scope=scope, reason=self.reason)
                )
            return reading
        for scope in self.scopes:
            self._add_scope(reading, name, scope, v0, v1, duration_s)
        return reading

    def _add_scope(
        self,
        reading: WindowReading,
        window: str,
        scope: Scope,
        v0: dict[str, int | None],
        v1: dict[str, int | None],
        duration_s: float,
    ) -> None:
        """Add one scope's measurement (or its not-measured entries) to ``reading``."""
        zones = [z for z in self.zones if z.scope == scope]
        if not zones:
            reason = "no DRAM RAPL domain on this CPU" if scope == "dram" else "no package zone"
            reading.not_measured.append(NotMeasured(meter=self.name, scope=scope, reason=reason))
            return
        energy: dict[str, float] = {}
        for z in zones:
            a, b = v0.get(z.key), v1.get(z.key)
            if a is None or b is None:
                reading.not_measured.append(
                    NotMeasured(
                        meter=self.name, scope=scope, device=z.key, reason="counter read failed"
                    )
                )
                continue
            energy[z.key] = delta_uj(a, b, z.max_energy_range_uj) / 1e6
            reading.flags.extend(self._wrap_flags(z, duration_s))
        if energy:
            reading.measurements.append(
                EnergyMeasurement.from_devices(
                    meter=self.name,
                    window=window,
                    scope=scope,
                    method="counter",
                    energy_j_by_device=energy,
                    duration_s=duration_s,
                )
            )

    @staticmethod
    def _wrap_flags(zone: RaplZone, duration_s: float) -> list[QualityFlag]:
        """Flag a window long enough that the counter might have wrapped more than once."""
        if zone.max_energy_range_uj <= 0:
            return []
        wrap_s = zone.max_energy_range_uj / 1e6 / WRAP_WARNING_POWER_W
        if duration_s < wrap_s:
            return []
        return [
            QualityFlag(
                code="rapl_multiple_wraps",
                message=(
                    f"{zone.key}: window {duration_s:.0f} s may exceed one counter wrap "
                    f"(~{wrap_s:.0f} s at {WRAP_WARNING_POWER_W:.0f} W); energy may be undercounted."
                ),
            )
        ]

    def stop(self) -> None:
        """Nothing to release."""
