"""Study result models (pydantic v2): what a sweep over repeated cycles found.

A `StudyResult` is written atomically as ``study_summary.json`` in the study directory.
It holds counts, failures, per-configuration statistics across cycles (bootstrap CIs of the
mean), the best configuration and where the time went. The completed ``ExperimentResult``
objects are attached in memory (``experiments``) but *not* embedded in the JSON: each lives in
its own ``result.json``, named in ``ConfigSummary.result_paths`` (relative to the study dir).
Use `StudyResult.load(study_dir)` to read a summary back with its experiments.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llenergymeasure.domain.files import validate_json_file
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.domain.stats import CycleSummary
from llenergymeasure.domain.timing import OVERHEAD_GOAL_S, TimeBreakdown
from llenergymeasure.exceptions import ResultFileError

logger = logging.getLogger(__name__)

STUDY_SCHEMA_VERSION = "1.0"

# Metrics summarised across cycles: ExperimentResult property name -> (heading, unit).
STUDY_METRICS: dict[str, tuple[str, str]] = {
    "energy_j": ("energy", "J"),
    "j_per_output_token": ("J/token", "J/output token"),
    "output_tokens_per_s": ("throughput", "output tokens/s"),
    "ttft_ms_mean": ("TTFT", "ms"),
    "itl_ms_mean": ("ITL", "ms"),
}

BEST_CRITERION = (
    "lowest mean J per output token, among configurations with every planned cycle "
    "completed and J/token measured in each"
)

StudyStatus = Literal["running", "completed", "interrupted", "stopped", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyCounts(_Model):
    """How many experiments (config x cycle) ended in each state."""

    planned: int = Field(description="experiments in the plan (valid configs x cycles)")
    completed: int
    failed: int
    skipped: int = Field(description="grid points skipped by the plan (invalid), not run")
    not_run: int = Field(description="planned but not run (study stopped or interrupted)")


class StudyFailure(_Model):
    """One failed experiment and where its traceback is."""

    position: int
    cycle: int
    label: str
    config_hash: str
    reason: str = Field(description="one-line summary (exception, exit code or timeout)")
    failure_path: str | None = Field(description="traceback file, relative to the study dir")


class SkippedConfig(_Model):
    """A grid point the plan skipped, with why."""

    point: dict[str, Any]
    reason: str


class MetricStats(_Model):
    """One metric of one configuration across cycles."""

    unit: str
    stats: CycleSummary | None = Field(description="None when no cycle measured it")
    not_measured_reason: str | None = None


class ConfigSummary(_Model):
    """One unique configuration across its cycles."""

    config_hash: str
    label: str
    key_fields: dict[str, Any] = Field(
        description="model, backend, precision and every field that differs between configs"
    )
    cycles_planned: int
    cycles_completed: int
    result_paths: list[str] = Field(description="result.json files, relative to the study dir")
    metrics: dict[str, MetricStats]
    best: bool = False
    energy_basis: str | None = Field(
        None,
        description="how energy_j was obtained over the cycles: method (counter | polled | "
        "estimate) and scope, e.g. 'counter (gpu)'; None when never measured",
    )
    flagged: int = Field(
        0, description="completed cycles whose result carries a warning or critical flag"
    )
    flag_codes: dict[str, int] = Field(
        default_factory=dict, description="flag code -> completed cycles that carry it"
    )


class ExperimentTiming(_Model):
    """Where one experiment's wall time went."""

    position: int
    cycle: int
    label: str
    status: str
    subprocess_wall_s: float = Field(description="spawn to exit of the experiment's process")
    measurement_s: float | None = Field(description="measurement window (None if it failed)")
    outside_measurement_s: float | None = Field(
        description="subprocess wall minus measurement window: imports, load, warm-up, saving"
    )
    backend: str | None = Field(None, description="its backend (from its result)")
    gap_before_s: float | None = Field(
        None, description="thermal-recovery gap waited before it (outside its process)"
    )
    breakdown: TimeBreakdown | None = Field(
        None,
        description="its wall time by part (docs/studies.md, 'Where a study's time goes'); "
        "None without a result",
    )


class StudyTiming(_Model):
    """Where the study's wall time went (this invocation; resumed runs add their own)."""

    wall_time_s: float
    experiments_wall_s: float
    measurement_s: float
    outside_measurement_s: float = Field(description="experiment wall minus measurement")
    gap_s: float = Field(description="waited in config/cycle gaps (thermal recovery)")
    experiments: list[ExperimentTiming] = Field(default_factory=list)
    breakdown: TimeBreakdown | None = Field(
        None, description="the experiments' breakdowns summed (those with a result)"
    )
    overhead_goal_s: float = Field(
        OVERHEAD_GOAL_S,
        description="target of breakdown.overhead_s per experiment (pytorch backend)",
    )


class StudyResult(_Model):
    """Everything a study found (docs/measurement.md §12). Written as ``study_summary.json``."""

    schema_version: str = STUDY_SCHEMA_VERSION
    study_name: str
    study_dir: str
    status: StudyStatus
    design_hash: str
    order: str
    shuffle_seed: int | None
    n_cycles: int
    counts: StudyCounts
    failures: list[StudyFailure] = Field(default_factory=list)
    skipped: list[SkippedConfig] = Field(default_factory=list)
    configs: list[ConfigSummary] = Field(default_factory=list)
    best_config_hash: str | None = None
    best_criterion: str = BEST_CRITERION
    best_note: str | None = Field(None, description="why no best config was chosen, if none")
    confidence: float = 0.95
    timing: StudyTiming
    warnings: list[str] = Field(default_factory=list)
    stopped_reason: str | None = Field(
        None, description="why the study stopped early (e.g. too many consecutive failures)"
    )
    experiments: list[ExperimentResult] = Field(
        default_factory=list,
        exclude=True,
        description="completed results, in plan order (not written to study_summary.json)",
    )

    @property
    def best(self) -> ConfigSummary | None:
        """The best configuration (see `best_criterion`), if one qualified."""
        return next((c for c in self.configs if c.best), None)

    @classmethod
    def load(cls, study_dir: Path) -> StudyResult:
        """Read ``study_summary.json`` and attach the completed experiments' results.

        A result file that is missing or not a valid result is skipped with a warning that
        names it (logged, and added to ``warnings``); an invalid summary raises
        ResultFileError naming it.
        """
        study_dir = Path(study_dir)
        summary = validate_json_file(cls, study_dir / "study_summary.json", "study summary")
        paths = [p for c in summary.configs for p in c.result_paths]
        experiments = []
        for p in paths:
            try:
                experiments.append(validate_json_file(ExperimentResult, study_dir / p, "result"))
            except ResultFileError as e:
                text = f"skipped {e}"
                logger.warning("%s", text)
                summary.warnings.append(text)
            except OSError as e:
                text = f"skipped {study_dir / p}: {e.strerror or e}"
                logger.warning("%s", text)
                summary.warnings.append(text)
        summary.experiments = experiments
        return summary
