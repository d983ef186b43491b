"""Counter intervals from a fast-read counter trace, and how much of each phase falls in each.

The NVML energy counter (docs/measurement.md section 2) steps about every 100 ms. Read much
faster than that (every few ms), a trace shows *when* each step happened to within the gap
between two reads, and the energy each step added. Between two consecutive step edges lies a
*counter interval* whose energy is known exactly (to the mJ); its edges are known to within
the read gap. :func:`counter_intervals` turns a trace into intervals:

- each value change brackets a step edge between the start of the last read with the old
  value and the end of the first read with the new one; the midpoint is the edge, with a
  standard deviation of width / sqrt(12) (uniform within the bracket);
- ``edge_model="grid"`` fits a regular grid (t0 + k * period) through the midpoints; when
  the steps' jitter about it is small against the brackets (``"auto"``, the default) the
  grid (clipped into each bracket) is used: far sharper than single brackets when the
  counter runs on its own clock;
- the reads should be dithered (random gaps): with a fixed read period the midpoint errors
  form a slow sawtooth against the counter's period instead of averaging out;
- :meth:`CounterIntervals.shifted` moves the edges by the sensor's delay (from the sensor
  profile): the counter at a step holds the energy drawn up to ``delay_s`` before it.

:class:`Coverage` is the cumulative of a piecewise-constant rate over spans (1 for "in this
phase", tokens per second for a step). Its integral over an interval, optionally seen
through a trailing boxcar average of ``window_s`` (a sensor that averages), is what the
regression in ``phases.py`` uses as each interval's phase time or token count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from llenergymeasure.domain.phases import OTHER, PhaseSpan

EdgeModel = Literal["auto", "grid", "midpoint"]
SQRT12 = math.sqrt(12.0)


@dataclasses.dataclass(frozen=True)
class CounterIntervals:
    """Consecutive counter intervals: ``edges_s`` (n + 1), ``energy_j`` (n), edge sd (n + 1)."""

    edges_s: np.ndarray
    energy_j: np.ndarray
    edge_sd_s: np.ndarray
    edge_model: str

    @property
    def n(self) -> int:
        """Number of intervals."""
        return int(self.energy_j.size)

    @property
    def start_s(self) -> np.ndarray:
        return self.edges_s[:-1]

    @property
    def end_s(self) -> np.ndarray:
        return self.edges_s[1:]

    @property
    def duration_s(self) -> np.ndarray:
        return np.diff(self.edges_s)

    @property
    def period_s(self) -> float | None:
        """Median interval duration (the counter's resolution), None without intervals."""
        return float(np.median(self.duration_s)) if self.n else None

    def select(self, mask: np.ndarray) -> CounterIntervals:
        """The intervals where ``mask`` holds; they must stay consecutive."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            empty = np.zeros(0)
            return CounterIntervals(empty, empty, empty, self.edge_model)
        if np.any(np.diff(idx) != 1):
            raise ValueError("selected intervals must be consecutive")
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        return CounterIntervals(
            self.edges_s[lo : hi + 1], self.energy_j[lo:hi], self.edge_sd_s[lo : hi + 1],
            self.edge_model,
        )  # fmt: skip

    def shifted(self, dt_s: float) -> CounterIntervals:
        """The same intervals with every edge moved by ``dt_s`` (``-delay_s``: to power time)."""
        return dataclasses.replace(self, edges_s=self.edges_s + dt_s)

    def overlapping(self, t0_s: float, t1_s: float) -> CounterIntervals:
        """The intervals that hold some of [t0, t1]: those inside and the two across its edges."""
        return self.select((self.end_s > t0_s) & (self.start_s < t1_s))

    def clipped(self, t0_s: float, t1_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Each interval's part inside [t0, t1] as (start, end); empty ones have start = end."""
        a = np.maximum(self.start_s, t0_s)
        return a, np.maximum(a, np.minimum(self.end_s, t1_s))

    def energy_inside_j(
        self, t0_s: float, t1_s: float, outside_w: float | None = None
    ) -> np.ndarray:
        """Each interval's energy inside [t0, t1]: its energy less its time outside at
        ``outside_w``, at most its mean power; None: at its mean power (power uniform within
        it, the split :meth:`cumulative_j` makes; summed, the window's counter energy)."""
        a, b = self.clipped(t0_s, t1_s)
        mean_w = self.energy_j / np.maximum(self.duration_s, 1e-12)
        out_w = mean_w if outside_w is None else np.minimum(mean_w, max(outside_w, 0.0))
        return np.asarray(self.energy_j - out_w * (self.duration_s - (b - a)))

    def cumulative_j(self, t_s: np.ndarray | float) -> np.ndarray:
        """Counter energy since the first edge at ``t_s``: linear within an interval.

        Outside the edges it extrapolates with the first / last interval's mean power.
        """
        t = np.asarray(t_s, dtype=float)
        cum = np.concatenate([[0.0], np.cumsum(self.energy_j)])
        out = np.interp(t, self.edges_s, cum)
        p_first = self.energy_j[0] / self.duration_s[0]
        p_last = self.energy_j[-1] / self.duration_s[-1]
        out = np.where(t < self.edges_s[0], (t - self.edges_s[0]) * p_first, out)
        return np.asarray(
            np.where(t > self.edges_s[-1], cum[-1] + (t - self.edges_s[-1]) * p_last, out)
        )


def counter_intervals(
    t_s: Sequence[float] | np.ndarray,
    energy_mj: Sequence[int] | np.ndarray,
    read_s: Sequence[float] | np.ndarray | None = None,
    *,
    edge_model: EdgeModel = "auto",
) -> CounterIntervals:
    """Intervals between the counter's steps in a trace of reads (sorted by time).

    ``t_s`` is when each read started and ``read_s`` how long it took (None: instantaneous);
    the value is taken to hold at some instant of the read. A counter that goes backwards
    (reset, wrap) raises ``ValueError``: split the trace there.
    """
    t = np.asarray(t_s, dtype=float)
    e = np.asarray(energy_mj, dtype=float)
    dur = np.zeros_like(t) if read_s is None else np.asarray(read_s, dtype=float)
    if t.size != e.size or dur.size != t.size:
        raise ValueError("t_s, energy_mj and read_s must have the same length")
    if np.any(np.diff(t) < 0):
        raise ValueError("counter trace must be sorted by time")
    if np.any(np.diff(e) < 0):
        raise ValueError("counter went backwards in the trace (reset or wrap): split it there")
    change = np.flatnonzero(np.diff(e) > 0) + 1  # first read showing each new value
    lo, hi = t[change - 1], t[change] + dur[change]
    mid, sd = (lo + hi) / 2.0, (hi - lo) / SQRT12
    model = "midpoint"
    if edge_model != "midpoint" and change.size >= 3:
        grid = _grid_edges(mid, lo, hi, sd, strict=edge_model == "grid")
        if grid is not None:
            mid, sd = grid
            model = "grid"
    energy_j = np.diff(e[change]) / 1000.0
    return CounterIntervals(mid, energy_j, sd, model)


def _grid_edges(
    mid: np.ndarray, lo: np.ndarray, hi: np.ndarray, sd: np.ndarray, strict: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Edges on a fitted regular grid (clipped into their brackets), or None if not on one.

    Step numbers come from rounding the gaps to the median gap; the grid (offset, period) is
    the least-squares line through the midpoints. The steps' jitter about the grid is what
    the midpoints' scatter leaves after the brackets' own spread; the grid is used (unless
    ``strict``) only when that jitter is under half the brackets' sd, and each edge's sd is
    then the jitter plus the line's standard error (at most its bracket's).
    """
    gaps = np.diff(mid)
    period = float(np.median(gaps))
    steps = np.rint(gaps / period) if period > 0 else np.zeros_like(gaps)
    if np.any(steps < 1):
        if strict:
            raise ValueError("counter steps are not on a regular grid")
        return None
    k = np.concatenate([[0.0], np.cumsum(steps)])
    design = np.column_stack([np.ones_like(k), k])
    coef, *_ = np.linalg.lstsq(design, mid, rcond=None)
    grid = design @ coef
    resid = mid - grid
    s2 = float(resid @ resid) / max(1, k.size - 2)
    bracket2 = float(np.mean(sd**2))
    jitter2 = max(0.0, s2 - bracket2)
    if not strict and jitter2 > 0.25 * bracket2:
        return None
    cov = s2 * np.linalg.inv(design.T @ design)
    line_var = np.einsum("ij,jk,ik->i", design, cov, design)
    return np.clip(grid, lo, hi), np.minimum(np.sqrt(jitter2 + line_var), sd)


class Coverage:
    """Cumulative of a rate that is constant on non-overlapping spans and 0 elsewhere.

    ``c(t)`` is the integral of the rate up to t and ``c2(t)`` the integral of ``c``; times are
    measured from ``origin`` to keep the second integral precise. Overlapping spans are an
    error; :meth:`union` merges spans of rate 1 (phase membership) first.
    """

    def __init__(self, starts: np.ndarray, ends: np.ndarray, rates: np.ndarray) -> None:
        order = np.argsort(starts, kind="stable")
        s, e, r = starts[order], ends[order], rates[order]
        if s.size and np.any(s[1:] < e[:-1] - 1e-12):
            raise ValueError("spans overlap")
        self.origin = float(s[0]) if s.size else 0.0
        self.s, self.len = s - self.origin, np.maximum(e - s, 0.0)
        self.rate = r
        area = self.rate * self.len
        self.cum = np.concatenate([[0.0], np.cumsum(area)])[:-1]  # before each span
        gap = np.diff(self.s, prepend=0.0) - np.concatenate([[0.0], self.len[:-1]])
        c2_at_start = np.cumsum(self.cum * gap)  # C is constant on each gap
        inner = self.cum * self.len + self.rate * self.len**2 / 2.0
        self.c2s = c2_at_start + np.concatenate([[0.0], np.cumsum(inner)[:-1]])

    @classmethod
    def union(cls, spans: Sequence[tuple[float, float]]) -> Coverage:
        """Rate-1 coverage of the union of possibly overlapping (start, end) spans."""
        merged: list[list[float]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        arr = np.asarray(merged, dtype=float).reshape(-1, 2)
        return cls(arr[:, 0], arr[:, 1], np.ones(arr.shape[0]))

    def _locate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(t, dtype=float) - self.origin
        i = np.searchsorted(self.s, x, side="right") - 1
        before = i < 0
        i = np.clip(i, 0, None)
        return x, i, before

    def c(self, t: np.ndarray | float) -> np.ndarray:
        """Integral of the rate from -inf to ``t``."""
        if self.s.size == 0:
            return np.zeros_like(np.asarray(t, dtype=float))
        x, i, before = self._locate(np.asarray(t))
        inside = np.clip(x - self.s[i], 0.0, self.len[i])
        return np.where(before, 0.0, self.cum[i] + self.rate[i] * inside)

    def c2(self, t: np.ndarray | float) -> np.ndarray:
        """Integral of :meth:`c` from -inf to ``t``."""
        if self.s.size == 0:
            return np.zeros_like(np.asarray(t, dtype=float))
        x, i, before = self._locate(np.asarray(t))
        dt = x - self.s[i]
        inside = np.clip(dt, 0.0, self.len[i])
        after = np.maximum(dt - self.len[i], 0.0)
        total = self.cum[i] + self.rate[i] * self.len[i]
        val = self.c2s[i] + self.cum[i] * inside + self.rate[i] * inside**2 / 2.0 + total * after
        return np.where(before, 0.0, val)

    def integral(
        self, a: np.ndarray, b: np.ndarray, delay_s: float = 0.0, window_s: float = 0.0
    ) -> np.ndarray:
        """Integral over [a, b] of the rate delayed by ``delay_s`` and boxcar-averaged.

        With a trailing average over ``window_s``, the integral of the averaged rate over
        [a, b] is (C2(b) - C2(b - w) - C2(a) + C2(a - w)) / w (times shifted by the delay).
        """
        a = np.asarray(a, dtype=float) - delay_s
        b = np.asarray(b, dtype=float) - delay_s
        if window_s <= 0.0:
            return np.asarray(self.c(b) - self.c(a), dtype=float)
        w = window_s
        return np.asarray(
            (self.c2(b) - self.c2(b - w) - self.c2(a) + self.c2(a - w)) / w, dtype=float
        )


def phase_coverages(spans: Sequence[PhaseSpan]) -> dict[str, Coverage]:
    """Rate-1 coverage per labelled phase (``other`` is the complement; its spans are ignored).

    Spans of different phases must not overlap (one device, one stream of work).
    """
    by_phase: dict[str, list[tuple[float, float]]] = {}
    for sp in spans:
        if sp.phase != OTHER and sp.end_s > sp.start_s:
            by_phase.setdefault(sp.phase, []).append((sp.start_s, sp.end_s))
    covs = {p: Coverage.union(v) for p, v in by_phase.items()}
    all_spans = [(a, b) for v in by_phase.values() for a, b in v]
    if all_spans:
        union = Coverage.union(all_spans)
        total = sum(float(c.len.sum()) for c in covs.values())
        if total - float(union.len.sum()) > 1e-9 * max(1.0, total):
            raise ValueError("spans of different phases overlap")
    return covs


def phase_times(
    start_s: np.ndarray,
    end_s: np.ndarray,
    coverages: dict[str, Coverage],
    delay_s: float = 0.0,
    window_s: float = 0.0,
) -> dict[str, np.ndarray]:
    """Seconds of each phase in each [start, end], ``other`` = the rest of the interval."""
    out = {p: cov.integral(start_s, end_s, delay_s, window_s) for p, cov in coverages.items()}
    labelled = sum(out.values(), np.zeros(np.asarray(start_s).shape))
    out[OTHER] = np.maximum(np.asarray(end_s) - np.asarray(start_s) - labelled, 0.0)
    return out
