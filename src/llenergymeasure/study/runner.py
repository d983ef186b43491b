"""StudyRunner: run a study's experiments one by one, each in a fresh ``spawn`` subprocess.

Per experiment the parent starts a child (`study.worker.experiment_worker` by default)
through `study.child.run_child`, then *blocks* on the pipe (``conn.poll(timeout)``) — no
busy loop: a spinning parent would burn the energy being measured. Outcomes:

* the child sends ("ok", ...)                    -> completed
* it sends ("error", ...)                        -> failed (traceback written to a file)
* it exits without a message (os._exit, OOM)     -> failed ("exited with code N / signal")
* ``experiment_timeout_seconds`` pass             -> terminated, then killed: failed

A failure fails that experiment only. ``max_consecutive_failures`` failures in a row stop
the study: `run` still returns the partial StudyResult, with ``status="stopped"`` and
``stopped_reason`` set (the CLI exits 1 then). Ctrl-C terminates the running child, marks
it pending, marks the study ``interrupted``, writes the manifest and re-raises
KeyboardInterrupt (CLI exit 130); everything stays resumable.

Layout: ``<results_dir>[/<output_dir>]/<study_name>_<timestamp>/`` holds the manifest, the
summary, ``failures/<position>_<label>.txt`` and one run directory per experiment (made by
the orchestrator; never reused, so a re-run after a crash never overwrites a partial one).

The idle-power baseline is shared across the study's experiments by the energy layer's
on-disk cache (keyed by GPU, with a TTL); each child reads it, nothing here disables it.

Gaps: ``config_gap_seconds`` between experiments of one cycle and ``cycle_gap_seconds``
when the cycle number changes (in grouped order that is every step), waited with a
blocking ``Event.wait`` that Ctrl-C interrupts; skipped with ``no_gaps=True``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llenergymeasure.clock import utc_now
from llenergymeasure.exceptions import StudyError
from llenergymeasure.progress import ExperimentTick, NullProgress, Progress
from llenergymeasure.results.filenames import STUDY_SUMMARY_FILENAME, safe_component
from llenergymeasure.results.persistence import atomic_write_text, new_run_dir, read_result
from llenergymeasure.study.child import Outcome, WorkerTarget, run_child
from llenergymeasure.study.manifest import (
    ManifestEntry,
    ManifestStatus,
    StudyManifest,
    check_same_design,
    find_resumable,
    new_manifest,
    read_manifest,
    write_manifest,
)
from llenergymeasure.study.worker import (
    ProgressMessage,
    StageMessage,
    WorkerRequest,
    experiment_worker,
)

if TYPE_CHECKING:
    from llenergymeasure.config.models import StudyConfig
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.domain.study import StudyResult
    from llenergymeasure.study.grid import PlannedExperiment, StudyPlan
    from llenergymeasure.study.slurm.submit import JobFunction, JobSystem

logger = logging.getLogger(__name__)


class TimeSource(Protocol):
    """A clock and a blocking wait on it (tests give a ManualClock)."""

    def now(self) -> float:
        """Seconds, monotonic."""

    def sleep(self, seconds: float) -> None:
        """Wait that long."""


class StudyRunner:
    """Runs a StudyConfig (see module docstring). One instance per run."""

    def __init__(
        self,
        study: StudyConfig,
        *,
        results_dir: Path,
        user_config: UserConfig | None = None,
        progress: Progress | None = None,
        no_gaps: bool = False,
        resume: bool = False,
        resume_dir: Path | None = None,
        cli_overrides: Mapping[str, Any] | None = None,
        worker_target: WorkerTarget | None = None,
        verbosity: int | None = None,
        retry_failed: bool = False,
        job_system: JobSystem | None = None,
        job_function: JobFunction | None = None,
        time_source: TimeSource | None = None,
    ) -> None:
        self.study = study
        self.results_dir = Path(results_dir)
        self.user_config = user_config
        self.progress: Progress = progress or NullProgress()
        self.no_gaps = no_gaps
        self.resume = resume or resume_dir is not None
        self.resume_dir = Path(resume_dir) if resume_dir is not None else None
        self.cli_overrides = cli_overrides
        self.worker_target: WorkerTarget = worker_target or experiment_worker
        self.verbosity = verbosity
        self.retry_failed = retry_failed
        self.job_system = job_system  # Slurm executor: None = submitit on this cluster
        self.job_function = job_function  # Slurm executor: None = run_experiment_job
        self.time_source = time_source  # Slurm executor: None = monotonic clock, Event.wait
        self._wake = threading.Event()  # never set: gaps are interruptible waits
        self._gap_s = 0.0
        self._durations_s: list[float] = []
        self._warnings: list[str] = []

    # ---- top level ------------------------------------------------------------------------
    def run(self) -> StudyResult:
        """Run (or resume) the study; returns the StudyResult, also written to disk."""
        t0 = time.monotonic()
        plan, study_dir, manifest = self._prepare()
        try:
            self._run_pending(plan, study_dir, manifest)
        except KeyboardInterrupt:
            self._finish(study_dir, manifest, "interrupted", "interrupted by the user (Ctrl-C)")
            self._write_summary(plan, study_dir, manifest, time.monotonic() - t0)
            raise
        except BaseException as e:
            self._finish(study_dir, manifest, "failed", f"study runner error: {e!r}")
            raise
        return self._write_summary(plan, study_dir, manifest, time.monotonic() - t0)

    def _prepare(self) -> tuple[StudyPlan, Path, StudyManifest]:
        """Expand the study and open a fresh study dir or the one to resume."""
        study_dir = self._dir_to_resume()
        if study_dir is None:
            plan = self._expand(self.study)
            study_dir = new_run_dir(self._parent_dir(), plan.study_name)
            manifest = new_manifest(plan)
        else:
            manifest = read_manifest(study_dir)
            plan = self._expand(self._with_stored_seed(manifest))
            check_same_design(manifest, plan)
            self._reopen(manifest, plan, study_dir)
        for note in plan.notes:
            self.progress.message(note)
        manifest.status, manifest.stopped_reason = "running", None
        write_manifest(study_dir, manifest)
        return plan, study_dir, manifest

    def _expand(self, study: StudyConfig) -> StudyPlan:
        """The plan (grid expansion, order, design hash)."""
        from llenergymeasure.study.grid import expand_study

        return expand_study(study, user_config=self.user_config, cli_overrides=self.cli_overrides)

    def _parent_dir(self) -> Path:
        """Where study directories are made."""
        out = self.study.output_dir
        return self.results_dir / out if out else self.results_dir

    def _dir_to_resume(self) -> Path | None:
        """The explicit resume dir, the newest unfinished one, or None (start afresh)."""
        if self.resume_dir is not None:
            return self.resume_dir
        if not self.resume:
            return None
        found = find_resumable(self._parent_dir(), self.study.study_name)
        if found is None:
            self.progress.message(
                f"nothing to resume for study {self.study.study_name!r} in "
                f"{self._parent_dir()}: starting a new study"
            )
        return found

    def _with_stored_seed(self, manifest: StudyManifest) -> StudyConfig:
        """A shuffled study without a seed is resumed with the seed drawn the first time."""
        ex = self.study.execution
        if ex.order != "shuffled" or ex.shuffle_seed is not None:
            return self.study
        seed = manifest.design.shuffle_seed
        return self.study.model_copy(
            update={"execution": ex.model_copy(update={"shuffle_seed": seed})}
        )

    def _reopen(self, manifest: StudyManifest, plan: StudyPlan, study_dir: Path) -> None:
        """Reset what must run again: running/failed entries, and completed ones whose
        result file is gone. Their old run dirs stay untouched.

        Slurm: an entry running as a Slurm job stays running (the executor re-attaches to
        its job), and a failed one is re-run only with ``retry_failed``."""
        manifest.sessions += 1
        on_slurm = self.study.execution.executor == "slurm"
        live_jobs = [e for e in manifest.entries if e.status == "running" and e.slurm_jobs]
        if live_jobs and not on_slurm:
            raise StudyError(
                f"{len(live_jobs)} experiment(s) of {study_dir} run as Slurm jobs -> resume "
                "with execution.executor: slurm (the jobs are re-attached, never re-submitted)"
            )
        for e in manifest.entries:
            lost = e.status == "completed" and not _exists(study_dir, e.result_path)
            if lost:
                self._warnings.append(f"{e.label} cycle {e.cycle}: result file missing, re-run")
            keep = (e.status == "running" and on_slurm and bool(e.slurm_jobs)) or (
                e.status == "failed" and on_slurm and not self.retry_failed
            )
            if keep:
                continue
            if lost or e.status in ("running", "failed"):
                e.status, e.result_path, e.failure_path, e.error = "pending", None, None, None
        failed = sum(e.status == "failed" for e in manifest.entries)
        if failed:
            self.progress.message(
                f"{failed} failed experiment(s) kept as failed: --retry-failed re-runs them"
            )
        done = sum(e.status == "completed" for e in manifest.entries)
        self.progress.message(
            f"resuming {study_dir}: {done} of {len(manifest.entries)} experiments already done"
        )

    # ---- the loop -------------------------------------------------------------------------
    def _run_pending(self, plan: StudyPlan, study_dir: Path, manifest: StudyManifest) -> None:
        """Run every pending entry in manifest order; stop after too many failures in a row."""
        if self.study.execution.executor == "slurm":
            self._run_on_slurm(plan, study_dir, manifest)
            return
        by_key = {(p.config_hash, p.cycle): p for p in plan.experiments}
        pending = [e for e in manifest.entries if e.status == "pending"]
        limit = self.study.execution.max_consecutive_failures
        consecutive, previous = 0, None
        for k, entry in enumerate(pending):
            if previous is not None:
                self._gap(previous, entry)
            planned = by_key.get(entry.key)
            if planned is None:  # same design hash guarantees this cannot happen
                raise StudyError(f"manifest entry {entry.label} cycle {entry.cycle} not in plan")
            eta = self._eta_s(len(pending) - k)
            ok = self._run_entry(planned, entry, manifest, study_dir, eta)
            consecutive = 0 if ok else consecutive + 1
            previous = entry
            if consecutive >= limit:
                reason = (
                    f"{consecutive} consecutive experiments failed "
                    f"(execution.max_consecutive_failures={limit}); last: {entry.error}"
                )
                self._finish(study_dir, manifest, "stopped", reason)
                return
        counts = manifest.counts()
        # "failed": ran to the end but some experiments failed; --resume retries them.
        status: ManifestStatus = (
            "completed" if counts["completed"] == len(manifest.entries) else "failed"
        )
        self._finish(study_dir, manifest, status, None)

    def _run_entry(
        self,
        planned: PlannedExperiment,
        entry: ManifestEntry,
        manifest: StudyManifest,
        study_dir: Path,
        eta_s: float | None,
    ) -> bool:
        """Run one experiment in a child and record its outcome; True if it completed."""
        tick = ExperimentTick(
            index=entry.position + 1,
            total=len(manifest.entries),
            cycle=entry.cycle,
            n_cycles=manifest.design.n_cycles,
            label=entry.label,
            eta_s=eta_s,
        )
        request = self._begin_attempt(entry, planned, manifest, study_dir)
        self.progress.experiment_started(tick)
        try:
            timeout_s = self.study.execution.experiment_timeout_seconds
            outcome = run_child(self.worker_target, request, timeout_s, self._forward)
        except KeyboardInterrupt:
            entry.status, entry.started_at = "pending", None
            raise
        self._durations_s.append(outcome.wall_s)
        self._record(entry, outcome, study_dir)
        write_manifest(study_dir, manifest)
        detail = "" if outcome.ok else (outcome.reason or "")
        self.progress.experiment_finished(tick, entry.status, detail)
        return outcome.ok

    def _begin_attempt(
        self,
        entry: ManifestEntry,
        planned: PlannedExperiment,
        manifest: StudyManifest,
        study_dir: Path,
    ) -> WorkerRequest:
        """Mark the entry running (one more attempt), write the manifest; its request."""
        entry.status, entry.started_at, entry.ended_at = "running", utc_now(), None
        entry.attempts += 1
        write_manifest(study_dir, manifest)
        return WorkerRequest(
            config=planned.config,
            provenance=dict(planned.provenance),
            results_dir=study_dir,
            position=entry.position,
            cycle=entry.cycle,
            label=entry.label,
            verbosity=self.verbosity,
        )

    # ---- the Slurm executor ---------------------------------------------------------------
    def _run_on_slurm(self, plan: StudyPlan, study_dir: Path, manifest: StudyManifest) -> None:
        """Every pending entry as a Slurm job (`study.slurm.executor`)."""
        import contextlib

        from llenergymeasure.study.slurm.executor import SlurmExecutor, StudyContext
        from llenergymeasure.study.slurm.settings import job_folder
        from llenergymeasure.study.slurm.submit import SubmititJobs

        jobs = self.job_system or SubmititJobs(job_folder(study_dir), self.study.slurm.python)

        def tick(entry: ManifestEntry) -> ExperimentTick:
            return ExperimentTick(
                index=entry.position + 1,
                total=len(manifest.entries),
                cycle=entry.cycle,
                n_cycles=manifest.design.n_cycles,
                label=entry.label,
                eta_s=None,
            )

        ctx = StudyContext(
            study=self.study,
            plan=plan,
            study_dir=study_dir,
            manifest=manifest,
            progress=self.progress,
            no_gaps=self.no_gaps,
            begin=lambda e, p: self._begin_attempt(e, p, manifest, study_dir),
            record=lambda e, o: self._record(e, o, study_dir),
            write=lambda: _write(study_dir, manifest),
            critical=contextlib.nullcontext,
            finish=lambda status, reason: self._finish(study_dir, manifest, status, reason),
            wait=self.time_source.sleep if self.time_source else self._wake.wait,
            tick=tick,
            warnings=self._warnings,
        )
        try:
            clock = self.time_source.now if self.time_source else time.monotonic
            SlurmExecutor(ctx, jobs, self.job_function, clock=clock).run()
        finally:
            self._gap_s += ctx.gap_s
            self._durations_s += ctx.durations_s

    def _record(self, entry: ManifestEntry, outcome: Outcome, study_dir: Path) -> None:
        """Write the outcome into the manifest entry (and the failure file)."""
        entry.ended_at = utc_now()
        entry.duration_s = outcome.wall_s
        if outcome.ok and outcome.result_path is not None:
            entry.status = "completed"
            entry.result_path = _relative(outcome.result_path, study_dir)
            if outcome.summary is not None:
                entry.measurement_s = outcome.summary.measurement_s
                entry.metrics = dict(outcome.summary.metrics)
            return
        entry.status = "failed"
        entry.error = outcome.reason
        entry.measurement_s = None
        path = _write_failure(study_dir, entry, outcome)
        entry.failure_path = _relative(path, study_dir)

    def _forward(self, message: ProgressMessage) -> None:
        """Pass a child's progress callback on to our Progress."""
        if isinstance(message, StageMessage):
            self.progress.stage(message.name)
        else:
            self.progress.prompts_done(message.done, message.total)

    # ---- gaps, ETA, end -------------------------------------------------------------------
    def _gap(self, previous: ManifestEntry, nxt: ManifestEntry) -> None:
        """Thermal-recovery wait between two experiments (blocking, Ctrl-C interrupts it)."""
        ex = self.study.execution
        is_cycle = nxt.cycle != previous.cycle
        seconds = ex.cycle_gap_seconds if is_cycle else ex.config_gap_seconds
        if self.no_gaps or seconds <= 0:
            return
        kind = "cycle" if is_cycle else "config"
        self.progress.message(f"waiting {seconds:g} s ({kind} gap, thermal recovery)")
        t0 = time.monotonic()
        try:
            self._wake.wait(seconds)
        finally:
            self._gap_s += time.monotonic() - t0

    def _eta_s(self, remaining: int) -> float | None:
        """Mean duration of the experiments finished so far times those left (this one too)."""
        if not self._durations_s:
            return None
        return sum(self._durations_s) / len(self._durations_s) * remaining

    def _finish(
        self,
        study_dir: Path,
        manifest: StudyManifest,
        status: ManifestStatus,
        reason: str | None,
    ) -> None:
        """Set the study's final status and write the manifest."""
        manifest.status = status
        manifest.stopped_reason = reason
        write_manifest(study_dir, manifest)

    def _write_summary(
        self, plan: StudyPlan, study_dir: Path, manifest: StudyManifest, wall_s: float
    ) -> StudyResult:
        """Load completed results, build the StudyResult and write study_summary.json."""
        from llenergymeasure.study.summary import build_study_result

        results = self._load_results(study_dir, manifest)
        result = build_study_result(
            plan=plan,
            manifest=manifest,
            study_dir=study_dir,
            results=results,
            gap_s=self._gap_s,
            wall_time_s=wall_s,
            warnings=self._warnings,
        )
        atomic_write_text(study_dir / STUDY_SUMMARY_FILENAME, result.model_dump_json(indent=2))
        return result

    def _load_results(
        self, study_dir: Path, manifest: StudyManifest
    ) -> dict[tuple[str, int], ExperimentResult]:
        """Completed experiments' results, read back from their result.json files."""
        loaded = {}
        for e in manifest.entries:
            if e.status != "completed" or e.result_path is None:
                continue
            try:
                loaded[e.key] = read_result(study_dir / e.result_path)
            except (OSError, ValueError) as err:
                self._warnings.append(f"{e.label} cycle {e.cycle}: unreadable result ({err})")
        return loaded


# ---- module helpers ------------------------------------------------------------------------


def _write_failure(study_dir: Path, entry: ManifestEntry, outcome: Outcome) -> Path:
    """Write ``failures/<position>_<label>.txt`` (a new file per attempt; never overwrite)."""
    folder = study_dir / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{entry.position}_{safe_component(entry.label, 'experiment')}"
    path = folder / f"{stem}.txt"
    if path.exists():
        path = folder / f"{stem}.attempt{entry.attempts}.txt"
    header = [
        f"experiment: {entry.label} (position {entry.position}, cycle {entry.cycle})",
        f"config_hash: {entry.config_hash}",
        f"attempt: {entry.attempts}",
        f"started_at: {entry.started_at}",
        f"ended_at: {entry.ended_at}",
        f"reason: {outcome.reason}",
        "",
    ]
    atomic_write_text(path, "\n".join(header) + (outcome.detail or "") + "\n")
    return path


def _write(study_dir: Path, manifest: StudyManifest) -> None:
    """Rewrite the manifest (atomically)."""
    write_manifest(study_dir, manifest)


def _relative(path: Path, study_dir: Path) -> str:
    """``path`` relative to the study dir when inside it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(study_dir.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _exists(study_dir: Path, relative: str | None) -> bool:
    """Whether a manifest path (relative to the study dir, or absolute) exists."""
    return relative is not None and (study_dir / relative).is_file()
