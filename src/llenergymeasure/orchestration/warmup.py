"""Warm-up before the measurement window (docs/measurement.md §7).

Three ways to stop warming up, recorded in a :class:`WarmupResult`:

- fixed: run ``n_warmup`` generations;
- cv: run until the latencies have settled: the coefficient of variation (sample std /
  mean) of the last ``window`` calls *after the first* falls under ``cv_threshold``, as
  soon as there are :data:`MIN_STEADY_CALLS` of them (fewer than ``window`` is enough), at
  most ``max_warmup`` runs (``converged`` says whether it got there). The first call is
  never part of the CV: it carries the one-time costs (CUDA kernels loaded, cuBLAS
  workspaces, kernel selection, compilation) by design; counting it only delayed the stop
  until it had slid out of the window;
- thermal floor (either mode): keep running warm-up generations until at least
  ``thermal_floor_s`` seconds have passed, so the device reaches its working temperature.
  The floor runs the workload rather than sleeping: an idle GPU cools down.

The first call's latency (``first_call_s``) and the median of the later ones
(``steady_call_s``) are recorded apart, so that the one-time costs show.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from llenergymeasure.config.models import WarmupConfig
from llenergymeasure.domain.results import WarmupResult

#: cv mode: calls after the first the CV needs at least (two agreeing within the threshold).
MIN_STEADY_CALLS = 2


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample std / mean of ``values``; None with fewer than 2 values or a zero mean."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def _converged(latencies_s: Sequence[float], settings: WarmupConfig) -> tuple[bool, float | None]:
    """(CV of the last ``window`` calls after the first < threshold, that CV); not before
    :data:`MIN_STEADY_CALLS` calls after the first."""
    steady = latencies_s[1:]
    if len(steady) < MIN_STEADY_CALLS:
        return False, None
    cv = coefficient_of_variation(steady[-settings.window :])
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
        cv = coefficient_of_variation(latencies[1:][-settings.window :])
    return WarmupResult(
        mode=mode,
        runs=len(latencies),
        converged=converged if mode == "cv" else None,
        final_cv=cv,
        cv_threshold=settings.cv_threshold if mode == "cv" else None,
        window=settings.window if mode == "cv" else None,
        latencies_s=latencies,
        first_call_s=latencies[0] if latencies else None,
        steady_call_s=statistics.median(latencies[1:]) if len(latencies) > 1 else None,
        duration_s=end - start,
        thermal_floor_s=settings.thermal_floor_s,
        thermal_floor_waited_s=max(0.0, end - main_done),
    )
