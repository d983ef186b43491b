"""Estimate meter: CPU energy where no hardware counter can be read. NOT a measurement.

Method ``estimate``, scope ``cpu_package``, device ``cpu:all``:

    energy_j = tdp_w x utilisation x duration_s

``utilisation`` is the busy fraction of all logical CPUs over the window, from
``psutil.cpu_times()`` read at both edges (busy = total − idle − iowait): the same quantity
``psutil.cpu_percent`` reports, without its shared module state that other callers reset.
``tdp_w`` is given by the user, or defaults to ``DEFAULT_TDP_W_PER_CORE`` (10 W) x physical
cores — a round figure between server (~3-6 W/core) and desktop (~8-15 W/core) parts.

Limits: real package power is neither linear in utilisation nor zero when idle (idle draw is
ignored here), turbo and AVX change power at equal utilisation, and utilisation counts other
processes. Treat the figure as an order of magnitude; every result using it carries an
``estimate_used`` quality flag. DRAM is not estimated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from llenergymeasure.core.energy.protocol import WindowBook, WindowReading
from llenergymeasure.core.energy.quality import estimate_flag
from llenergymeasure.domain.energy import EnergyMeasurement, NotMeasured, Scope

DEFAULT_TDP_W_PER_CORE = 10.0


def default_tdp_w() -> float:
    """Default CPU TDP: DEFAULT_TDP_W_PER_CORE x physical cores (logical if unknown)."""
    import psutil

    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    return DEFAULT_TDP_W_PER_CORE * cores


def _busy_and_total_s(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds from a psutil cpu_times() tuple."""
    total = float(sum(times))
    idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
    return total - idle, total


class EstimateMeter:
    """CPU energy estimated as TDP x utilisation x duration (see module docstring)."""

    scopes: tuple[Scope, ...] = ("cpu_package",)
    per_device = False  # one figure for all CPUs: cpu:all

    def __init__(
        self,
        tdp_w: float | None = None,
        cpu_times: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import psutil

        self.name = "estimate"
        self.tdp_w = tdp_w if tdp_w is not None else default_tdp_w()
        self.tdp_source = (
            "config"
            if tdp_w is not None
            else f"default {DEFAULT_TDP_W_PER_CORE:.0f} W/physical core"
        )
        self.cpu_times = cpu_times or psutil.cpu_times
        self.clock = clock
        self._book = WindowBook(self.name)

    def start(self) -> None:
        """Nothing to acquire."""

    def begin_window(self, name: str) -> None:
        """Record CPU times at the window start."""
        self._book.open(name, (self.clock(), _busy_and_total_s(self.cpu_times())))

    def end_window(self, name: str) -> WindowReading:
        """Estimated CPU package energy over the window."""
        t0, (busy0, total0) = cast("tuple[float, tuple[float, float]]", self._book.close(name))
        t1 = self.clock()
        busy1, total1 = _busy_and_total_s(self.cpu_times())
        duration_s = t1 - t0
        d_total = total1 - total0
        utilisation = min(1.0, max(0.0, (busy1 - busy0) / d_total)) if d_total > 0 else 0.0
        energy_j = self.tdp_w * utilisation * duration_s
        detail = (
            f"TDP {self.tdp_w:.0f} W ({self.tdp_source}) x utilisation {utilisation:.1%} x "
            f"{duration_s:.2f} s; idle power ignored"
        )
        return WindowReading(
            measurements=[
                EnergyMeasurement.from_devices(
                    meter=self.name,
                    window=name,
                    scope="cpu_package",
                    method="estimate",
                    energy_j_by_device={"cpu:all": energy_j},
                    duration_s=duration_s,
                    warnings=[detail],
                )
            ],
            not_measured=[
                NotMeasured(
                    meter=self.name, scope="dram", reason="the estimate meter does not model DRAM"
                )
            ],
            flags=[estimate_flag("CPU", detail)],
        )

    def stop(self) -> None:
        """Nothing to release."""
