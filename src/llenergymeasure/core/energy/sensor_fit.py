"""How a GPU's power signals respond to a known load: the analysis behind sensor profiles.

``benchmarks/gpu_sensor_characterise.py`` drives a square-wave load (busy/idle spans of known
times) and reads each signal fast: the energy counter, NVML_FI_DEV_POWER_INSTANT and
nvmlDeviceGetPowerUsage (docs/measurement.md sections 2-3). These functions (numpy only)
turn the traces into a ``domain.phases.SignalProfile`` per signal:

- **update period**: the median gap between value changes (:func:`update_period`); a signal
  that changes on almost every read updates faster than it was read (an upper bound only);
- **step grid** of the counter: period, phase and jitter of its steps about a regular grid
  (:func:`step_grid`);
- **response**: the reading modelled as offset + gain x the load indicator delayed by
  ``delay_s`` and averaged over a trailing boxcar of ``averaging_window_s``, or through a
  first-order (exponential) lag; a grid search over (delay, window) with the linear part
  solved exactly picks the best fit (:func:`fit_point_response`, and
  :func:`fit_counter_response` for the counter, whose intervals integrate the response).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from llenergymeasure.core.energy.intervals import CounterIntervals, Coverage, counter_intervals
from llenergymeasure.domain.phases import SignalProfile

Span = tuple[float, float]
FAST_CHANGE_SHARE = 0.8  # changes on >= 80 % of reads: faster than the reads
TRUSTED_MAX_S = 0.01  # a fine signal must resolve ~10 ms to be integrated over phases


@dataclasses.dataclass(frozen=True)
class UpdateStats:
    """How often a signal's value changes."""

    period_s: float | None  # None when it changes on nearly every read
    read_gap_s: float
    changes: int
    faster_than_reads: bool


@dataclasses.dataclass(frozen=True)
class GridFit:
    """Counter steps on a regular grid: t_k = phase_s + k * period_s (+ jitter)."""

    period_s: float
    phase_s: float
    jitter_s: float
    n_steps: int


@dataclasses.dataclass(frozen=True)
class ResponseFit:
    """reading = offset + gain x (load delayed by delay_s, averaged over window_s)."""

    kind: str  # "boxcar" | "exponential"
    delay_s: float
    window_s: float  # boxcar width, or exponential time constant
    gain: float
    offset: float
    r2: float


def update_period(t_s: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> UpdateStats:  # fmt: skip
    """Median gap between changes of value, or an upper bound when it changes every read."""
    t, v = np.asarray(t_s, dtype=float), np.asarray(values, dtype=float)
    gap = float(np.median(np.diff(t))) if t.size > 1 else math.nan
    changed = np.flatnonzero(np.diff(v) != 0) + 1
    share = changed.size / max(1, t.size - 1)
    if share >= FAST_CHANGE_SHARE or changed.size < 3:
        return UpdateStats(None, gap, int(changed.size), share >= FAST_CHANGE_SHARE)
    mids = (t[changed - 1] + t[changed]) / 2.0
    return UpdateStats(float(np.median(np.diff(mids))), gap, int(changed.size), False)


def step_grid(
    t_s: np.ndarray, energy_mj: np.ndarray, read_s: np.ndarray | None = None
) -> GridFit | None:
    """Period, phase (offset modulo the period) and jitter of the counter's steps."""
    iv = counter_intervals(t_s, energy_mj, read_s, edge_model="midpoint")
    if iv.n < 3:
        return None
    mid, sd = iv.edges_s, iv.edge_sd_s
    period0 = float(np.median(np.diff(mid)))
    k = np.concatenate([[0.0], np.cumsum(np.rint(np.diff(mid) / period0))])
    design = np.column_stack([np.ones_like(k), k])
    (offset, period), *_ = np.linalg.lstsq(design, mid, rcond=None)
    resid = mid - design @ np.array([offset, period])
    s2 = float(resid @ resid) / max(1, k.size - 2)
    jitter = math.sqrt(max(0.0, s2 - float(np.mean(sd**2))))
    return GridFit(float(period), float(offset % period), jitter, int(k.size))


# --- response models ----------------------------------------------------------------------
def boxcar_response(cov: Coverage, t: np.ndarray, delay_s: float, window_s: float) -> np.ndarray:
    """Load indicator delayed and averaged over a trailing window, at times ``t``."""
    x = t - delay_s
    if window_s <= 0:
        return np.asarray((cov.c(x + 1e-9) - cov.c(x - 1e-9)) / 2e-9, dtype=float)
    return np.asarray((cov.c(x) - cov.c(x - window_s)) / window_s, dtype=float)


def exponential_response(spans: Sequence[Span], t: np.ndarray, delay_s: float, tau_s: float) -> np.ndarray:  # fmt: skip
    """First-order lag (time constant ``tau_s``) of the load indicator, delayed, at ``t``."""
    return _ExponentialLag(spans).at(t, delay_s, tau_s)


class _ExponentialLag:
    """The lag's value at every load edge, computed once per time constant."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.edges, self.levels = _edges(spans)
        self._at_edges: dict[float, np.ndarray] = {}

    def _values_at_edges(self, tau_s: float) -> np.ndarray:
        if tau_s not in self._at_edges:
            y_at = np.zeros(self.edges.size)
            decay = np.exp(-np.diff(self.edges) / tau_s)
            y = 0.0
            for i in range(1, self.edges.size):  # exact between edges: relax towards the level
                y = self.levels[i - 1] + (y - self.levels[i - 1]) * decay[i - 1]
                y_at[i] = y
            self._at_edges[tau_s] = y_at
        return self._at_edges[tau_s]

    def at(self, t: np.ndarray, delay_s: float, tau_s: float) -> np.ndarray:
        """The lagged, delayed indicator at times ``t``."""
        y_at = self._values_at_edges(tau_s)
        x = t - delay_s
        i = np.clip(np.searchsorted(self.edges, x, side="right") - 1, 0, None)
        level = np.where(x < self.edges[0], 0.0, self.levels[i])
        since = np.maximum(x - self.edges[i], 0.0)
        return np.asarray(level + (y_at[i] - level) * np.exp(-since / tau_s))


def _edges(spans: Sequence[Span]) -> tuple[np.ndarray, np.ndarray]:
    """Times where the load changes and the level (0/1) from each on."""
    pts: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        pts += [(a, 1.0), (b, 0.0)]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def _linear_fit(feature: np.ndarray, y: np.ndarray, base: np.ndarray) -> tuple[float, float, float]:
    """y = offset * base + gain * feature by the 2 x 2 normal equations: (gain, offset, rss)."""
    bb, bf, ff = float(base @ base), float(base @ feature), float(feature @ feature)
    by, fy = float(base @ y), float(feature @ y)
    det = bb * ff - bf * bf
    if det <= 1e-12 * max(1.0, bb * ff):
        return 0.0, by / bb, float(y @ y) - by * by / bb
    offset = (ff * by - bf * fy) / det
    gain = (bb * fy - bf * by) / det
    return gain, offset, max(0.0, float(y @ y) - offset * by - gain * fy)


def _grid_search(
    model: Callable[[float, float], np.ndarray],
    y: np.ndarray,
    base: np.ndarray,
    delays: np.ndarray,
    windows: np.ndarray,
    min_window_s: float = 0.0,
) -> tuple[float, float, float, float, float]:
    """Best (delay, window, gain, offset, rss): a coarse grid, then a pattern search.

    Delay and window trade off along d + w/2 = const (a boxcar's centre), so the local
    search also moves along that valley; it starts from the three best grid points.
    """

    def fit(d: float, w: float) -> tuple[float, float, float, float, float]:
        gain, offset, rss = _linear_fit(model(d, w), y, base)
        return d, w, gain, offset, rss if math.isfinite(rss) else math.inf

    coarse = sorted((fit(float(d), float(w)) for d in delays for w in windows), key=lambda f: f[4])
    step_d = float(np.diff(delays).min()) if delays.size > 1 else 1e-3
    starts = coarse[:3]
    return min((_pattern_search(fit, c, step_d, min_window_s) for c in starts), key=lambda f: f[4])


def _pattern_search(
    fit: Callable[[float, float], tuple[float, float, float, float, float]],
    start: tuple[float, float, float, float, float],
    step_d: float,
    min_window_s: float,
    min_step_s: float = 5e-5,
    max_evals: int = 400,
) -> tuple[float, float, float, float, float]:
    """Hooke-Jeeves style descent over (delay >= 0, window >= 0), halving steps when stuck."""
    best = start
    step_w = max(step_d, 0.5 * best[1])
    moves = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, -2), (-1, 2), (1, 1), (-1, -1))
    evals = 0
    while (step_d > min_step_s or step_w > max(min_step_s, 0.002 * best[1])) and evals < max_evals:
        improved = False
        for md, mw in moves:
            d = best[0] + md * step_d
            w = best[1] + (mw * step_d if abs(mw) == 2 else mw * step_w)
            if d < 0 or w < min_window_s:
                continue
            cand = fit(d, w)
            evals += 1
            if cand[4] < best[4]:
                best, improved = cand, True
        if not improved:
            step_d, step_w = step_d / 2.0, step_w / 2.0
    return best


def default_grids(max_delay_s: float = 0.3, max_window_s: float = 2.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Delays every 5 ms and windows log-spaced from 0.5 ms (plus 0): the coarse search."""
    delays = np.arange(0.0, max_delay_s + 1e-12, 0.005)
    windows = np.concatenate([[0.0], np.geomspace(5e-4, max_window_s, 16)])
    return delays, windows


def fit_point_response(
    t_s: np.ndarray,
    values: np.ndarray,
    busy: Sequence[Span],
    *,
    delays: np.ndarray | None = None,
    windows: np.ndarray | None = None,
    max_points: int = 8_000,
) -> ResponseFit:
    """Best of boxcar and exponential responses for a sampled power signal."""
    t, y = np.asarray(t_s, dtype=float), np.asarray(values, dtype=float)
    if t.size > max_points:  # the fit needs coverage of the load, not every sample
        keep = np.linspace(0, t.size - 1, max_points).astype(int)
        t, y = t[keep], y[keep]
    d_grid, w_grid = default_grids() if delays is None or windows is None else (delays, windows)
    cov = Coverage.union(list(busy))
    lag = _ExponentialLag(busy)
    base = np.ones_like(y)
    fits = []
    box = _grid_search(lambda d, w: boxcar_response(cov, t, d, w), y, base, d_grid, w_grid)
    fits.append(("boxcar", box))
    taus = w_grid[w_grid > 0]
    exp = _grid_search(lambda d, w: lag.at(t, d, w), y, base, d_grid, taus, min_window_s=1e-4)
    fits.append(("exponential", exp))
    kind, (d, w, gain, offset, rss) = min(fits, key=lambda f: f[1][4])
    return ResponseFit(kind, d, w, gain, offset, _r2(y, rss))


def fit_counter_response(
    intervals: CounterIntervals,
    busy: Sequence[Span],
    *,
    delays: np.ndarray | None = None,
    windows: np.ndarray | None = None,
) -> ResponseFit:
    """Delay and averaging of the counter: interval energy = offset x duration + gain x busy."""
    d_grid, w_grid = default_grids(0.3, 0.3) if delays is None or windows is None else (delays, windows)  # fmt: skip
    cov = Coverage.union(list(busy))
    a, b, y = intervals.start_s, intervals.end_s, intervals.energy_j
    best = _grid_search(lambda d, w: cov.integral(a, b, d, w), y, intervals.duration_s, d_grid, w_grid)  # fmt: skip
    d, w, gain, offset, rss = best
    return ResponseFit("boxcar", d, w, gain, offset, _r2(y, rss))


def _r2(y: np.ndarray, rss: float) -> float:
    tss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - rss / tss if tss > 0 else 0.0


def trusted_for_phases(update: UpdateStats, fit: ResponseFit | None, min_r2: float = 0.9) -> bool:
    """A point signal fine enough to integrate over phase spans (~10 ms or better)."""
    if fit is None or fit.r2 < min_r2:
        return False
    period = update.period_s if update.period_s is not None else update.read_gap_s
    return period <= TRUSTED_MAX_S and fit.window_s <= TRUSTED_MAX_S


# --- a profile from the benchmark's traces ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SignalTrace:
    """One signal as read by the benchmark: read start times, durations, values."""

    t_s: np.ndarray
    read_s: np.ndarray
    values: np.ndarray


def counter_signal_profile(trace: SignalTrace, busy: Sequence[Span]) -> SignalProfile:
    """Update period, grid jitter, delay and averaging of the energy counter."""
    grid = step_grid(trace.t_s, trace.values, trace.read_s)
    iv = counter_intervals(trace.t_s, trace.values, trace.read_s)
    fit = fit_counter_response(iv, busy) if iv.n >= 10 else None
    return SignalProfile(
        update_period_s=None if grid is None else grid.period_s,
        phase_jitter_s=None if grid is None else grid.jitter_s,
        delay_s=None if fit is None else fit.delay_s,
        averaging_window_s=None if fit is None else fit.window_s,
        response=None if fit is None else "boxcar",
        read_cost_s=float(np.median(trace.read_s)) if trace.read_s.size else None,
        fit_r2=None if fit is None else fit.r2,
        trusted_for_phases=fit is not None and fit.r2 >= 0.9,
    )


def point_signal_profile(trace: SignalTrace, busy: Sequence[Span]) -> SignalProfile:
    """Update period, delay and averaging window of a sampled power signal."""
    mid = trace.t_s + trace.read_s / 2.0
    update = update_period(mid, trace.values)
    fit = fit_point_response(mid, trace.values, busy) if mid.size >= 100 else None
    return SignalProfile(
        update_period_s=update.period_s,
        delay_s=None if fit is None else fit.delay_s,
        averaging_window_s=None if fit is None else fit.window_s,
        response=None if fit is None else fit.kind,
        read_cost_s=float(np.median(trace.read_s)) if trace.read_s.size else None,
        fit_r2=None if fit is None else fit.r2,
        trusted_for_phases=trusted_for_phases(update, fit),
    )
