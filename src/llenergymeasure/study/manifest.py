"""``study_manifest.json``: the checkpoint of a study, rewritten atomically at every change.

The manifest lists every planned experiment (config x cycle) in run order with its status
(pending | running | completed | failed), where its result or traceback is, and timings.
Writes go through `results.persistence.atomic_write_text` (temp file + fsync + os.replace),
so a reader — or a resume after SIGKILL — sees the previous state or the next, never half.

Before an attempt starts, its entry records the attempt's **run directory** (made by the
runner, so it is known even if nothing else is) and, once the child exists, **who runs
it** (`RunnerInfo`: host, pid and process start time now; a job id for executors whose
jobs outlive the study). That is what `study.recovery` needs on a resume: wait for or stop
a still-live orphan, and adopt a result a dead runner never recorded.

Resume rules (`check_same_design`): a study may be resumed only with the same design: the
same expanded experiments (config hashes) and cycles in the same run order. A different
design is refused with a message naming what changed, down to the field and its old and new
values (`design_changes`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure.clock import utc_now
from llenergymeasure.config.provenance import flatten
from llenergymeasure.domain.study import StudyStatus
from llenergymeasure.exceptions import StudyDirError
from llenergymeasure.results.filenames import STUDY_MANIFEST_FILENAME
from llenergymeasure.results.persistence import atomic_write_text

if TYPE_CHECKING:
    from llenergymeasure.study.grid import StudyPlan

MANIFEST_SCHEMA_VERSION = (
    "1.2"  # 1.1: run_dir, runner, adopted, set_aside; design configs; 1.2: slurm_jobs
)

EntryStatus = Literal["pending", "running", "completed", "failed", "skipped"]
ManifestStatus = StudyStatus  # a study's manifest and its summary share the statuses


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DesignConfig(_Model):
    """One unique configuration of the design."""

    config_hash: str
    label: str
    config: dict[str, Any] | None = Field(
        None, description="the hashed fields (credentials redacted), to name what changed"
    )


class DesignSummary(_Model):
    """What defines a study's design, kept to explain a refused resume."""

    configs: list[DesignConfig]
    n_cycles: int
    order: str
    shuffle_seed: int | None


class RunnerInfo(_Model):
    """Who runs (or ran) an attempt: enough to find it again after the study process died.

    ``kind`` says how to find it: ``local`` is a child process of the study runner on
    ``host`` (``pid`` + ``start_time`` identify it: a pid alone may be reused); other
    executors (a container, a batch scheduler) record their own ``job_id``.
    """

    kind: str = "local"
    host: str
    pid: int | None = None
    start_time: float | None = Field(
        None, description="process start time, s since the epoch (psutil create_time)"
    )
    job_id: str | None = Field(
        None, description="container / scheduler job id, for executors (None locally)"
    )
    study_pid: int | None = Field(None, description="the runner process that started it")


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
    save_s: float | None = Field(
        None, description="the child's 'saving' stage to its report (writing result.json)"
    )
    exit_s: float | None = Field(None, description="the child's report to its exit")
    gap_before_s: float | None = Field(
        None, description="thermal-recovery gap waited before this attempt started"
    )
    metrics: dict[str, float | None] = Field(default_factory=dict)
    run_dir: str | None = Field(
        None, description="the latest attempt's run directory, relative (made before it ran)"
    )
    runner: RunnerInfo | None = Field(None, description="who runs the latest attempt")
    adopted: bool = Field(
        False, description="completed from a result.json found on resume, not reported live"
    )
    set_aside: list[str] = Field(
        default_factory=list, description="unreadable result files renamed aside (kept)"
    )
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
    from llenergymeasure.config.hashing import hashed_fields

    return DesignSummary(
        configs=[
            DesignConfig(config_hash=u.config_hash, label=u.label, config=hashed_fields(u.config))
            for u in plan.unique_configs
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
    """Read a study directory's manifest; StudyDirError (exit 2) naming the file if it is
    missing, unreadable or not a valid manifest. Never a reason to start afresh silently."""
    path = manifest_path(study_dir)
    if not path.is_file():
        raise StudyDirError(
            f"{path} not found: is {study_dir} a study directory? -> give the directory "
            "that holds study_manifest.json"
        )
    try:
        return StudyManifest.model_validate_json(path.read_bytes())
    except (ValidationError, json.JSONDecodeError, OSError) as e:
        raise StudyDirError(
            f"{path} is not a valid study manifest ({_first_problem(e)}) -> restore it from "
            "a backup, or move the directory aside and start the study afresh (without "
            "--resume)"
        ) from e


def _first_problem(error: Exception) -> str:
    """One line describing why a manifest did not load."""
    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return f"{type(error).__name__}: {error}"


def find_resumable(results_dir: Path, study_name: str) -> Path | None:
    """The newest study dir of ``study_name`` under ``results_dir`` not yet completed.

    Directories are ``<study_name>_<timestamp>[-n]``; newest = latest manifest
    ``created_at``. The design is *not* used to pick: a changed design must be refused
    (`check_same_design`), not silently started afresh.
    """
    found: list[tuple[datetime, Path]] = []
    own = re.compile(rf"{re.escape(study_name)}_\d{{8}}-\d{{6}}(-\d+)?")  # run_dir_name
    for path in Path(results_dir).glob(f"{study_name}_*/{STUDY_MANIFEST_FILENAME}"):
        if not own.fullmatch(path.parent.name):
            continue  # another study whose name starts with this one's
        manifest = read_manifest(path.parent)  # a corrupt one is an error, not skipped
        if manifest.study_name == study_name and manifest.status != "completed":
            found.append((manifest.created_at, path.parent))
    return max(found)[1] if found else None


def run_order(pairs: Any) -> list[tuple[str, int]]:
    """``(config_hash, cycle)`` of manifest entries or planned experiments, in run order."""
    return [(p.config_hash, p.cycle) for p in sorted(pairs, key=lambda p: p.position)]


def check_same_design(manifest: StudyManifest, plan: StudyPlan) -> None:
    """Refuse (StudyDirError, exit 2) to resume ``manifest`` with a plan of another design.

    The design is the expanded one: each experiment's config hash and cycle, in run order.
    Writing ``8.0`` for ``8`` or spelling out a default changes nothing; a changed field is
    named with its old and new values.
    """
    if run_order(manifest.entries) == run_order(plan.experiments):
        return
    changes = design_changes(manifest.design, design_summary(plan))
    if not changes:
        changes = ["the run order changed (same configurations and cycles)"]
    raise StudyDirError(
        "cannot resume: the study design changed since this study directory was started:\n"
        + "\n".join(f"  - {c}" for c in changes)
        + "\n-> restore the original study file, or run without --resume to start a new study"
    )


def design_changes(old: DesignSummary, new: DesignSummary) -> list[str]:
    """Human-readable differences between two designs: configs added and removed, each
    changed field with its old and new values, and cycles / order / seed."""
    old_cfg = {c.config_hash: c for c in old.configs}
    new_cfg = {c.config_hash: c for c in new.configs}
    gone = [c for h, c in old_cfg.items() if h not in new_cfg]
    came = [c for h, c in new_cfg.items() if h not in old_cfg]
    pairs, gone, came = _pair_by_label(gone, came)
    changes = [f"config added: {c.label or c.config_hash[:8]} ({c.config_hash[:8]})" for c in came]
    changes += [
        f"config removed: {c.label or c.config_hash[:8]} ({c.config_hash[:8]})" for c in gone
    ]
    pairs += list(zip(gone, came, strict=False))  # what else changed between the leftovers
    changes += _field_changes(pairs)
    for field in ("n_cycles", "order", "shuffle_seed"):
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            changes.append(f"{field}: {before} -> {after}")
    return changes


def _pair_by_label(
    gone: list[DesignConfig], came: list[DesignConfig]
) -> tuple[list[tuple[DesignConfig, DesignConfig]], list[DesignConfig], list[DesignConfig]]:
    """Changed configs that kept their label (the same grid point, a field changed)."""
    by_label = {c.label: c for c in came}
    pairs = [(g, by_label[g.label]) for g in gone if g.label in by_label]
    paired = {id(x) for pair in pairs for x in pair}
    return (
        pairs,
        [g for g in gone if id(g) not in paired],
        [c for c in came if id(c) not in paired],
    )


def _field_changes(pairs: list[tuple[DesignConfig, DesignConfig]]) -> list[str]:
    """``field: old -> new`` for each field that differs within a pair, merged over pairs."""
    seen: dict[str, list[str]] = {}
    for old, new in pairs:
        if old.config is None or new.config is None:
            continue
        a, b = flatten(old.config), flatten(new.config)
        for key in sorted(set(a) | set(b)):
            if a.get(key, _ABSENT) != b.get(key, _ABSENT):
                text = f"{key}: {_shown(a.get(key, _ABSENT))} -> {_shown(b.get(key, _ABSENT))}"
                seen.setdefault(text, []).append(new.label or new.config_hash[:8])
    total = len(pairs)
    return [
        text if total == 1 else f"{text} ({'every config' if len(ls) == total else ', '.join(ls)})"
        for text, ls in seen.items()
    ]


_ABSENT = object()


def _shown(value: Any) -> str:
    """A field value as a change message shows it."""
    if value is _ABSENT:
        return "(not set)"
    return json.dumps(value) if isinstance(value, (str, dict, list)) else str(value)
