"""``study_manifest.json``: the checkpoint of a study, rewritten atomically at every change.

The manifest lists every planned experiment (config x cycle) in run order with its status
(pending | running | completed | failed), where its result or traceback is, and timings.
Writes go through `results.persistence.atomic_write_text` (temp file + fsync + os.replace),
so a reader — or a resume after SIGKILL — sees the previous state or the next, never half.

Resume rules (`check_same_design`): a study may be resumed only with the same design
(same design hash). A different design is refused with a message naming what changed.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure.clock import utc_now
from llenergymeasure.domain.study import StudyStatus
from llenergymeasure.exceptions import StudyError
from llenergymeasure.results.filenames import STUDY_MANIFEST_FILENAME
from llenergymeasure.results.persistence import atomic_write_text

if TYPE_CHECKING:
    from llenergymeasure.study.grid import StudyPlan

MANIFEST_SCHEMA_VERSION = "1.0"

EntryStatus = Literal["pending", "running", "completed", "failed", "skipped"]
ManifestStatus = StudyStatus  # a study's manifest and its summary share the statuses


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DesignConfig(_Model):
    """One unique configuration of the design."""

    config_hash: str
    label: str


class DesignSummary(_Model):
    """What defines a study's design, kept to explain a refused resume."""

    configs: list[DesignConfig]
    n_cycles: int
    order: str
    shuffle_seed: int | None


class SlurmJobRecord(_Model):
    """One Slurm job submitted for an entry (``execution.executor: slurm``).

    Appended with ``job_id`` None *before* ``sbatch`` runs, so that a study process killed
    between sbatch and recording the id finds its job again by ``name`` on resume
    (never submitting a second one); the id is filled in as soon as sbatch returns.
    """

    job_id: str | None = Field(None, description="Slurm's job id (None: being submitted)")
    name: str = Field(description="--job-name, unique per study dir, entry and attempt")
    submitted_at: datetime
    folder: str = Field(description="submitit's folder of the job, relative to the study dir")
    state: str | None = Field(
        None, description="last state sacct gave (COMPLETED, CANCELLED, TIMEOUT, ...)"
    )
    exit_code: str | None = Field(None, description="sacct's ExitCode, code:signal")
    node: str | None = None
    cuda_visible_devices: str | None = Field(None, description="what Slurm set in the job")
    ended_at: datetime | None = None
    stdout: str | None = Field(None, description="the job's output log, relative")
    stderr: str | None = Field(None, description="the job's error log, relative")


class ManifestEntry(_Model):
    """One planned experiment (a config in a cycle) and what became of it."""

    position: int = Field(description="0-based index in the run order")
    cycle: int = Field(description="1-based")
    config_hash: str
    label: str
    status: EntryStatus = "pending"
    attempts: int = Field(0, description="times it was started (resumes re-run)")
    result_path: str | None = Field(None, description="result.json, relative to the study dir")
    failure_path: str | None = Field(None, description="traceback file, relative")
    error: str | None = Field(None, description="one-line failure summary")
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = Field(None, description="subprocess wall time")
    measurement_s: float | None = Field(None, description="measurement window")
    metrics: dict[str, float | None] = Field(default_factory=dict)
    slurm_jobs: list[SlurmJobRecord] = Field(
        default_factory=list, description="every Slurm job submitted for it, oldest first"
    )

    @property
    def slurm_job(self) -> SlurmJobRecord | None:
        """The latest Slurm job of this entry (None: never submitted to Slurm)."""
        return self.slurm_jobs[-1] if self.slurm_jobs else None

    @property
    def key(self) -> tuple[str, int]:
        """(config_hash, cycle): what identifies this experiment across resumes."""
        return (self.config_hash, self.cycle)


class StudyManifest(_Model):
    """The study's checkpoint (see module docstring)."""

    schema_version: str = MANIFEST_SCHEMA_VERSION
    study_name: str
    design_hash: str
    design: DesignSummary
    status: ManifestStatus = "running"
    stopped_reason: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    sessions: int = Field(1, description="runs of this study dir (1 + resumes)")
    entries: list[ManifestEntry]

    def counts(self) -> dict[str, int]:
        """Number of entries per status."""
        out = {s: 0 for s in ("pending", "running", "completed", "failed", "skipped")}
        for e in self.entries:
            out[e.status] += 1
        return out


def design_summary(plan: StudyPlan) -> DesignSummary:
    """The design part of a plan, as stored in the manifest."""
    return DesignSummary(
        configs=[
            DesignConfig(config_hash=u.config_hash, label=u.label) for u in plan.unique_configs
        ],
        n_cycles=plan.n_cycles,
        order=plan.order,
        shuffle_seed=plan.shuffle_seed,
    )


def new_manifest(plan: StudyPlan) -> StudyManifest:
    """A fresh manifest with every planned experiment pending, in run order."""
    entries = [
        ManifestEntry(position=p.position, cycle=p.cycle, config_hash=p.config_hash, label=p.label)
        for p in plan.experiments
    ]
    return StudyManifest(
        study_name=plan.study_name,
        design_hash=plan.design_hash,
        design=design_summary(plan),
        entries=entries,
    )


def manifest_path(study_dir: Path) -> Path:
    """Where a study directory keeps its manifest."""
    return Path(study_dir) / STUDY_MANIFEST_FILENAME


def write_manifest(study_dir: Path, manifest: StudyManifest) -> Path:
    """Stamp ``updated_at`` and rewrite the manifest atomically."""
    manifest.updated_at = utc_now()
    return atomic_write_text(manifest_path(study_dir), manifest.model_dump_json(indent=2) + "\n")


def read_manifest(study_dir: Path) -> StudyManifest:
    """Read a study directory's manifest; StudyError if missing or unreadable."""
    path = manifest_path(study_dir)
    if not path.is_file():
        raise StudyError(f"{path} not found: is {study_dir} a study directory?")
    try:
        return StudyManifest.model_validate_json(path.read_bytes())
    except (ValidationError, json.JSONDecodeError) as e:
        raise StudyError(
            f"{path} is not a valid study manifest ({e.__class__.__name__}): "
            "start the study afresh (without --resume)"
        ) from e


def find_resumable(results_dir: Path, study_name: str) -> Path | None:
    """The newest study dir of ``study_name`` under ``results_dir`` not yet completed.

    Directories are ``<study_name>_<timestamp>[-n]``; newest = latest manifest
    ``created_at``. The design is *not* used to pick: a changed design must be refused
    (`check_same_design`), not silently started afresh.
    """
    found: list[tuple[datetime, Path]] = []
    for path in Path(results_dir).glob(f"{study_name}_*/{STUDY_MANIFEST_FILENAME}"):
        try:
            manifest = StudyManifest.model_validate_json(path.read_bytes())
        except (ValidationError, ValueError, OSError):
            continue
        if manifest.study_name == study_name and manifest.status != "completed":
            found.append((manifest.created_at, path.parent))
    return max(found)[1] if found else None


def check_same_design(manifest: StudyManifest, plan: StudyPlan) -> None:
    """Refuse (StudyError) to resume ``manifest`` with a plan of a different design."""
    if manifest.design_hash == plan.design_hash:
        return
    changes = design_changes(manifest.design, design_summary(plan))
    if not changes:
        changes = ["base/sweep/experiments settings changed (same configs after expansion)"]
    raise StudyError(
        "cannot resume: the study design changed since this study directory was started:\n"
        + "\n".join(f"  - {c}" for c in changes)
        + "\n-> restore the original study file, or run without --resume to start a new study"
    )


def design_changes(old: DesignSummary, new: DesignSummary) -> list[str]:
    """Human-readable differences between two designs."""
    old_cfg = {c.config_hash: c.label for c in old.configs}
    new_cfg = {c.config_hash: c.label for c in new.configs}
    changes = [
        f"config added: {new_cfg[h] or h[:8]} ({h[:8]})" for h in new_cfg if h not in old_cfg
    ]
    changes += [
        f"config removed: {old_cfg[h] or h[:8]} ({h[:8]})" for h in old_cfg if h not in new_cfg
    ]
    for field in ("n_cycles", "order", "shuffle_seed"):
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            changes.append(f"{field}: {before} -> {after}")
    return changes
