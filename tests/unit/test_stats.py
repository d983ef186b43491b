"""Bootstrap confidence intervals and cycle summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llenergymeasure.study.stats import bootstrap_ci, summarise_cycles


def test_ci_contains_mean_and_is_labelled() -> None:
    values = [10.0, 12.0, 11.0, 13.0, 9.0, 12.5]
    ci = bootstrap_ci(values)
    assert ci is not None
    assert ci.mean == pytest.approx(67.5 / 6)  # (10 + 12 + 11 + 13 + 9 + 12.5) / 6
    assert ci.low < ci.mean < ci.high
    assert ci.low >= 9.0 and ci.high <= 13.0  # resample means stay within the data range
    assert (ci.method, ci.n, ci.seed, ci.confidence) == ("percentile bootstrap", 6, 0, 0.95)
    assert ci.note is None


def test_two_values_hand_computed_interval() -> None:
    # resample means of [0, 10] are 0, 5, 10 with probability 1/4, 1/2, 1/4:
    # the 2.5th percentile is 0 and the 97.5th is 10
    ci = bootstrap_ci([0.0, 10.0], n_resamples=4000)
    assert ci is not None
    assert (ci.low, ci.mean, ci.high) == (0.0, 5.0, 10.0)
    assert ci.note is not None and "only 2 values" in ci.note


def test_constant_values_give_a_point() -> None:
    ci = bootstrap_ci([3.0, 3.0, 3.0, 3.0, 3.0])
    assert ci is not None
    assert ci.low == ci.high == ci.mean == 3.0


def test_one_value_and_empty() -> None:
    one = bootstrap_ci([4.2])
    assert one is not None
    assert one.low == one.high == one.mean == 4.2
    assert one.note is not None and "one value" in one.note
    assert bootstrap_ci([]) is None


def test_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(7)
    few = bootstrap_ci(rng.normal(100.0, 10.0, size=10))
    many = bootstrap_ci(rng.normal(100.0, 10.0, size=1000))
    assert few is not None and many is not None
    assert (many.high - many.low) < (few.high - few.low) / 3  # width ~ 1/sqrt(n): 10x fewer


def test_reproducible_with_seed_and_differs_with_another() -> None:
    values = list(np.random.default_rng(3).exponential(2.0, size=20))
    a = bootstrap_ci(values, seed=11)
    b = bootstrap_ci(values, seed=11)
    c = bootstrap_ci(values, seed=12)
    assert a is not None and b is not None and c is not None
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_coverage_on_normal_samples() -> None:
    rng = np.random.default_rng(2024)
    true_mean, repeats = 5.0, 200
    covered = 0
    for i in range(repeats):
        ci = bootstrap_ci(rng.normal(true_mean, 2.0, size=30), n_resamples=1000, seed=i)
        assert ci is not None
        covered += ci.low <= true_mean <= ci.high
    # nominal 95%; the percentile bootstrap runs a little low at n=30; binomial sd ~1.5%
    assert 0.88 <= covered / repeats <= 0.99


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, math.nan])


def test_summarise_cycles_drops_missing_and_hand_values() -> None:
    s = summarise_cycles([2.0, 4.0, None, math.nan, 6.0])
    assert s is not None
    assert (s.n, s.n_dropped) == (3, 2)
    assert s.mean == pytest.approx(4.0)  # (2 + 4 + 6) / 3
    assert s.std == pytest.approx(2.0)  # sqrt(((-2)^2 + 0 + 2^2) / (3 - 1))
    assert s.cv == pytest.approx(0.5)  # 2 / 4
    assert (s.min, s.max) == (2.0, 6.0)
    assert s.ci.low <= s.mean <= s.ci.high


def test_summarise_cycles_single_and_none() -> None:
    one = summarise_cycles([7.0, None])
    assert one is not None
    assert (one.n, one.n_dropped, one.std, one.cv) == (1, 1, None, None)
    assert summarise_cycles([None, None]) is None
    assert summarise_cycles([]) is None
