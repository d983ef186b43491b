"""Statistics across study cycles: percentile-bootstrap confidence intervals of the mean.

Inputs are one value per cycle (e.g. energy_j of one configuration in each cycle), so n is
small; resampling draws all ``n_resamples × n`` indices in one array operation
(memory ``8 · n_resamples · n`` bytes). Seeded: the same values and seed give the same CI.

With few cycles the percentile bootstrap is too narrow (it cannot see variance the sample
did not show); the CI carries a note when n is small.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from llenergymeasure.core.energy.regression import t_quantile
from llenergymeasure.domain.stats import ConfidenceInterval, CycleSummary

FEW_SAMPLES = 5  # below this many values the CI gets a caution note


def bootstrap_ci(
    values: Iterable[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval | None:
    """Percentile-bootstrap CI of the mean; ``None`` for no values, a point for one value."""
    arr = np.asarray(list(values), dtype=float)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if arr.size == 0:
        return None
    if not np.all(np.isfinite(arr)):
        raise ValueError("values must be finite (drop missing cycles first, see summarise_cycles)")
    mean = float(arr.mean())
    low, high = (
        (mean, mean) if arr.size == 1 else _percentile_interval(arr, n_resamples, confidence, seed)
    )
    return ConfidenceInterval(
        mean=mean,
        low=low,
        high=high,
        n=int(arr.size),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        note=_small_sample_note(int(arr.size)),
    )


def _percentile_interval(
    arr: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentiles of the means of ``n_resamples`` resamples, drawn in one array op."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_resamples, arr.size))
    means = arr[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _small_sample_note(n: int) -> str | None:
    if n == 1:
        return "one value: no spread to resample, interval is the value itself"
    if n < FEW_SAMPLES:
        return f"only {n} values: a percentile bootstrap CI is too narrow at this n"
    return None


def summarise_cycles(
    values: Iterable[float | None],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CycleSummary | None:
    """Mean, spread and bootstrap CI of one metric over cycles.

    ``None`` and non-finite entries (failed cycles, unmeasured metric) are dropped and
    counted in ``n_dropped``; returns ``None`` when no value is left.
    """
    raw = list(values)
    kept = [float(v) for v in raw if v is not None and math.isfinite(v)]
    ci = bootstrap_ci(kept, n_resamples=n_resamples, confidence=confidence, seed=seed)
    if ci is None:
        return None
    arr = np.asarray(kept)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    cv = std / abs(ci.mean) if std is not None and ci.mean != 0 else None
    return CycleSummary(
        n=arr.size,
        n_dropped=len(raw) - arr.size,
        mean=ci.mean,
        std=std,
        cv=cv,
        min=float(arr.min()),
        max=float(arr.max()),
        ci=ci,
    )


RATIO_METHOD = "Welch t on the log ratio of means (delta method)"


def ratio_ci(
    numerator: Iterable[float], denominator: Iterable[float], *, confidence: float = 0.95
) -> ConfidenceInterval | None:
    """CI of ``mean(numerator) / mean(denominator)`` for two independent samples.

    The log of the ratio has standard error ``sqrt(s_b^2/(n_b m_b^2) + s_a^2/(n_a m_a^2))``
    (delta method) and a Welch-Satterthwaite t quantile, so the interval widens honestly
    when there are few cycles (a percentile bootstrap covers only ~71 % at 2 cycles per
    side). ``None`` when either sample has fewer than 2 values, a mean is not positive, or
    both samples have no spread at all but differ (an exact ratio is still returned as a
    point when both are constant).
    """
    num = np.asarray(list(numerator), dtype=float)
    den = np.asarray(list(denominator), dtype=float)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den))):
        raise ValueError("values must be finite (drop missing cycles first)")
    if num.size < 2 or den.size < 2 or num.mean() <= 0 or den.mean() <= 0:
        return None
    ratio = float(num.mean() / den.mean())
    parts = [x.var(ddof=1) / (x.size * x.mean() ** 2) for x in (num, den)]
    se = math.sqrt(sum(parts))
    n = int(min(num.size, den.size))
    if se == 0.0:
        low = high = ratio
    else:
        dof = se**4 / sum(v**2 / (x.size - 1) for v, x in zip(parts, (num, den), strict=True))
        # floor the Welch dof: a conservative (wider) interval, never a narrower one
        half = t_quantile(0.5 + confidence / 2, max(1, math.floor(dof))) * se
        low, high = ratio * math.exp(-half), ratio * math.exp(half)
    return ConfidenceInterval(
        mean=ratio,
        low=low,
        high=high,
        n=n,
        confidence=confidence,
        method=RATIO_METHOD,
        n_resamples=1,
        seed=0,
        note=None if n >= FEW_SAMPLES else f"only {n} cycles: a wide interval at this n",
    )
