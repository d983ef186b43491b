"""Statistics result types: a confidence interval and a metric's spread across cycles.

The values are computed by ``study/stats.py`` (percentile bootstrap); they are domain types so
that results (``domain/study.py``) can hold them without importing the study layer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

BOOTSTRAP_METHOD = "percentile bootstrap"


class ConfidenceInterval(BaseModel):
    """A confidence interval for the mean of some values (same unit as the values)."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    low: float
    high: float
    n: int = Field(ge=1)
    confidence: float = Field(gt=0.0, lt=1.0)
    method: str = BOOTSTRAP_METHOD
    n_resamples: int = Field(ge=1)
    seed: int
    note: str | None = None


class CycleSummary(BaseModel):
    """Spread of one metric across cycles, with a bootstrap CI of its mean."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, description="finite values used")
    n_dropped: int = Field(ge=0, description="missing (None) or non-finite values left out")
    mean: float
    std: float | None = Field(description="sample standard deviation (ddof=1); None for n=1")
    cv: float | None = Field(description="std / |mean|; None when undefined")
    min: float
    max: float
    ci: ConfidenceInterval
