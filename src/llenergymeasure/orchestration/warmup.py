"""Warm-up before the measurement window (docs/measurement.md §7).

Three ways to stop warming up, recorded in a :class:`WarmupResult`:

- fixed: run ``n_warmup`` generations;
- cv: run until the coefficient of variation (sample std / mean) of the last ``window``
  latencies falls under ``cv_threshold``, at most ``max_warmup`` runs (``converged`` says
  whether it got there);
- thermal floor (either mode): keep running warm-up generations until at least
  ``thermal_floor_s`` seconds have passed, so the device reaches its working temperature.
  The floor runs the workload rather than sleeping: an idle GPU cools down.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from llenergymeasure.config.models import WarmupConfig
from llenergymeasure.domain.results import WarmupResult


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample std / mean of ``values``; None with fewer than 2 values or a zero mean."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def _converged(latencies_s: Sequence[float], settings: WarmupConfig) -> tuple[bool, float | None]:
    """(CV of the last ``window`` latencies < threshold, that CV)."""
    if len(latencies_s) < settings.window:
        return False, None
    cv = coefficient_of_variation(latencies_s[-settings.window :])
    return cv is not None and cv < settings.cv_threshold, cv


def run_warmup(
    step: Callable[[], float],
    settings: WarmupConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_step: Callable[[int], None] | None = None,
) -> WarmupResult:
    """Run warm-up generations through ``step`` (returns one run's latency in s).

    ``on_step(runs_so_far)`` is called after each run (progress reporting).
    """
    if not settings.enabled:
        return WarmupResult(mode="disabled", runs=0)
    mode = "cv" if settings.convergence else "fixed"
    start = clock()
    latencies: list[float] = []
    converged, cv = False, None

    def one() -> None:
        latencies.append(float(step()))
        if on_step is not None:
            on_step(len(latencies))

    if mode == "fixed":
        for _ in range(settings.n_warmup):
            one()
    else:
        while len(latencies) < settings.max_warmup and not converged:
            one()
            converged, cv = _converged(latencies, settings)
    main_done = clock()
    while clock() - start < settings.thermal_floor_s:
        one()
    end = clock()
    if mode == "cv" and cv is None:
        cv = coefficient_of_variation(latencies[-settings.window :])
    return WarmupResult(
        mode=mode,
        runs=len(latencies),
        converged=converged if mode == "cv" else None,
        final_cv=cv,
        cv_threshold=settings.cv_threshold if mode == "cv" else None,
        window=settings.window if mode == "cv" else None,
        latencies_s=latencies,
        duration_s=end - start,
        thermal_floor_s=settings.thermal_floor_s,
        thermal_floor_waited_s=max(0.0, end - main_done),
    )
