"""Pareto fronts of the report's energy scatters."""

from __future__ import annotations

import math
import random

import pytest

from llenergymeasure.reporting.pareto import pareto_front


def _dominated(i: int, xs: list[float], ys: list[float], sx: float, sy: float) -> bool:
    """Brute force: another point at least as good on both axes and better on one."""
    return any(
        sx * xs[j] <= sx * xs[i]
        and sy * ys[j] <= sy * ys[i]
        and (sx * xs[j] < sx * xs[i] or sy * ys[j] < sy * ys[i])
        for j in range(len(xs))
    )


def test_minimise_both_orders_the_front_from_best_x_to_best_y() -> None:
    #        a       b       c (dominated by b)  d
    xs = [1.0, 2.0, 3.0, 4.0]
    ys = [4.0, 2.0, 3.0, 1.0]
    assert pareto_front(xs, ys) == [0, 1, 3]


def test_maximise_x_is_energy_vs_throughput() -> None:
    # (throughput, J/token): 100 tok/s at 1 J is beaten by 200 tok/s at 0.5 J
    xs = [100.0, 200.0, 400.0]
    ys = [1.0, 0.5, 0.8]
    assert pareto_front(xs, ys, maximise_x=True) == [2, 1]


def test_duplicates_of_a_front_point_are_kept_and_nan_left_out() -> None:
    xs = [1.0, 1.0, math.nan, 2.0]
    ys = [1.0, 1.0, 0.0, 2.0]
    assert pareto_front(xs, ys) == [0, 1]


@pytest.mark.parametrize("maximise_x", [False, True])
def test_matches_brute_force_on_random_points(maximise_x: bool) -> None:
    rnd = random.Random(3)
    for _ in range(50):
        xs = [rnd.randint(0, 20) / 2 for _ in range(15)]
        ys = [rnd.randint(0, 20) / 2 for _ in range(15)]
        sx = -1.0 if maximise_x else 1.0
        expected = {i for i in range(15) if not _dominated(i, xs, ys, sx, 1.0)}
        assert set(pareto_front(xs, ys, maximise_x=maximise_x)) == expected


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        pareto_front([1.0], [1.0, 2.0])
