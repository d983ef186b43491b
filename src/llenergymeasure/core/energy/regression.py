"""Least squares with honest standard errors and identifiability checks (numpy only).

Used by ``phases.py`` (interval energy on phase times) and ``per_request.py`` (interval
energy on tokens and time); the method is described in docs/measurement.md.

- Fit: ordinary least squares, no intercept (every term is a physical quantity: seconds of a
  phase, tokens).
- Identifiability: enough rows (``min_rows``), full column rank, and a condition number of the
  column-normalised design below ``max_condition``; otherwise :class:`NotIdentifiable` with
  the reason, never numbers.
- Standard errors: the larger, per coefficient, of the classical one (s^2 (X'X)^-1) and a
  Newey-West one (heteroscedasticity and autocorrelation up to ``hac_lag`` intervals, which
  share edges and the sensor's averaging), both scaled to n / (n - p). Taking the larger is
  conservative by design; the tests check coverage over seeds.
- Confidence intervals: coefficient +- t(level, n - p) x se.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


@dataclasses.dataclass(frozen=True)
class NotIdentifiable:
    """Why a model could not be fitted."""

    reason: str


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """A fitted model: coefficients, covariance, residuals, and the numbers behind the CI."""

    names: tuple[str, ...]
    coef: np.ndarray
    cov: np.ndarray
    residuals: np.ndarray
    dof: int
    t_crit: float
    condition_number: float
    level: float
    se_method: str

    @property
    def se(self) -> np.ndarray:
        """Standard error of each coefficient."""
        return np.sqrt(np.diag(self.cov))

    def value(self, name: str) -> float:
        """Coefficient by name."""
        return float(self.coef[self.names.index(name)])

    def se_of(self, name: str) -> float:
        """Standard error by name."""
        return float(self.se[self.names.index(name)])

    def ci_of(self, name: str) -> tuple[float, float]:
        """Confidence interval by name."""
        v, s = self.value(name), self.se_of(name)
        return v - self.t_crit * s, v + self.t_crit * s

    def combo_se(self, weights: np.ndarray) -> np.ndarray:
        """Standard error of ``weights @ coef`` for each row of ``weights`` (n x p)."""
        w = np.atleast_2d(weights)
        return np.asarray(np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", w, self.cov, w), 0.0)))


def t_quantile(p: float, dof: int) -> float:
    """Student-t quantile: exact for 1 and 2 degrees of freedom, else a Cornish-Fisher
    expansion about the normal (0.1 % off at dof 3, < 0.3 % for dof >= 5)."""
    if dof <= 0:
        return math.inf
    if dof == 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    n = float(dof)
    return z + g1 / n + g2 / n**2 + g3 / n**3 + g4 / n**4


def condition_number(x: np.ndarray) -> float:
    """Condition number of ``x`` with each column scaled to unit length (inf if a column is 0)."""
    norms = np.linalg.norm(x, axis=0)
    if np.any(norms == 0):
        return math.inf
    sv = np.linalg.svd(x / norms, compute_uv=False)
    return float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf


def newey_west_meat(x: np.ndarray, r: np.ndarray, lag: int) -> np.ndarray:
    """sum_t sum_s w(t - s) r_t r_s x_t x_s' with Bartlett weights up to ``lag``."""
    xr = x * r[:, None]
    meat = xr.T @ xr
    for lag_i in range(1, min(lag, x.shape[0] - 1) + 1):
        w = 1.0 - lag_i / (lag + 1.0)
        cross = xr[lag_i:].T @ xr[:-lag_i]
        meat += w * (cross + cross.T)
    return np.asarray(meat, dtype=float)


def fit_linear(
    x: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    min_rows: int = 20,
    max_condition: float = 1e3,
    hac_lag: int = 2,
    level: float = 0.95,
    identify_rows: np.ndarray | None = None,
) -> LinearFit | NotIdentifiable:
    """OLS of ``y`` on the columns of ``x`` (no intercept), or why it cannot be identified.

    ``identify_rows`` (a boolean mask; default every row): the rows that must identify the
    model on their own (enough of them, full rank, condition number), e.g. the whole counter
    intervals of a window, so that a few partial ones at its edges never identify what the
    rest cannot; the fit itself uses every row.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = x.shape
    x_id = x if identify_rows is None else x[np.asarray(identify_rows, dtype=bool)]
    n_id = x_id.shape[0]
    if n_id < max(min_rows, p + 2):
        return NotIdentifiable(f"too few counter intervals: {n_id} < {max(min_rows, p + 2)}")
    cond = condition_number(x_id)
    if not math.isfinite(cond) or np.linalg.matrix_rank(x_id) < p:
        return NotIdentifiable(f"terms {list(names)} are collinear (rank deficient)")
    if cond > max_condition:
        return NotIdentifiable(
            f"terms {list(names)} are nearly collinear: condition number {cond:.3g} > "
            f"{max_condition:.3g}"
        )
    cond = condition_number(x)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = y - x @ coef
    dof = n - p
    bread = np.linalg.inv(x.T @ x)
    s2 = float(r @ r) / dof
    cov_classic = s2 * bread
    cov_hac = bread @ newey_west_meat(x, r, hac_lag) @ bread * (n / dof)
    cov = _conservative(cov_classic, cov_hac)
    return LinearFit(
        names=tuple(names),
        coef=coef,
        cov=cov,
        residuals=r,
        dof=dof,
        t_crit=t_quantile(0.5 + level / 2.0, dof),
        condition_number=cond,
        level=level,
        se_method=f"max(classical, Newey-West lag {hac_lag}) per coefficient, t({dof})",
    )


def _conservative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Covariance with, per coefficient, the larger variance; correlations from ``a``."""
    sd_a, sd_b = np.sqrt(np.diag(a)), np.sqrt(np.diag(b))
    sd = np.maximum(sd_a, sd_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = a / np.outer(sd_a, sd_a)
    corr = np.nan_to_num(corr)
    return np.asarray(corr * np.outer(sd, sd))
