"""Pareto fronts: the configurations no other configuration beats on both axes at once."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    maximise_x: bool = False,
    maximise_y: bool = False,
) -> list[int]:
    """Indices of the non-dominated points, ordered along the front.

    A point is dominated when another is at least as good on both axes and better on one
    (lower is better unless ``maximise_*``). Points with a non-finite coordinate are left
    out; exact duplicates of a front point are all kept. The points are ordered from the
    one with the best x to the one with the best y, so that a step line through them in
    that order (plotly ``line_shape="hv"``) draws the boundary of the dominated region.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length ({len(xs)} != {len(ys)})")
    sx, sy = (-1.0 if maximise_x else 1.0), (-1.0 if maximise_y else 1.0)
    points = [
        (sx * float(x), sy * float(y), i)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        if math.isfinite(x) and math.isfinite(y)
    ]
    points.sort()
    front: list[int] = []
    best_y = math.inf
    last: tuple[float, float] | None = None
    for x, y, i in points:
        if y < best_y:
            front.append(i)
            best_y, last = y, (x, y)
        elif last is not None and (x, y) == last:
            front.append(i)
    return front
