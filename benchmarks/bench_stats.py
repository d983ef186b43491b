"""Statistics shared by the GPU benchmarks (numpy only)."""

from __future__ import annotations


def median_ci(values: list[float], confidence: float = 0.95, n: int = 4000) -> tuple[float, float]:
    """Percentile-bootstrap CI of the median (seeded)."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    meds = np.median(arr[rng.integers(0, arr.size, size=(n, arr.size))], axis=1)
    alpha = 1.0 - confidence
    low, high = np.percentile(meds, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
