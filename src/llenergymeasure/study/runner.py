"""StudyRunner: run a study's experiments one by one, each in a fresh ``spawn`` subprocess
or, for a backend whose runner is ``docker:<image>``, in a fresh container.

Per experiment the parent picks the runner of its backend (user config ``runners:``,
`study.runners`): locally it starts a child (`study.worker.experiment_worker` by default)
through `study.child.run_child`, then *blocks* on the pipe (``conn.poll(timeout)``) — no
busy loop: a spinning parent would burn the energy being measured; a Docker runner
(`study.docker_runner`) blocks on the container's output the same way. Docker, the NVIDIA
runtime and the images are checked before the study starts (all problems together).
Outcomes, whichever the runner:

* the child sends ("ok", ...)                    -> completed
* it sends ("error", ...)                        -> failed (traceback written to a file)
* it exits without a message (os._exit, OOM)     -> failed ("exited with code N / signal")
* ``experiment_timeout_seconds`` pass             -> terminated, then killed: failed

A failure fails that experiment only. ``max_consecutive_failures`` failures in a row stop
the study: `run` still returns the partial StudyResult, with ``status="stopped"`` and
``stopped_reason`` set (the CLI exits 1 then).

Stopping (`study.signals`): SIGINT (Ctrl-C), SIGTERM (Slurm, Kubernetes, systemd) and
SIGHUP all terminate the running child (then kill it), put its entry back to pending
(or adopt its result if it finished), mark the study ``interrupted`` with the signal named,
write the manifest and the summary of what finished, and raise
``signals.Interrupted(signum)`` carrying the study directory (CLI exit ``128 + signum``).
A child that dies of one of those signals stops the study the same way.

Durability: one runner per study directory (`study.lock`); before an attempt starts its
entry records the run directory the runner made for it, then the child's pid and start
time; a resume first waits for (or stops) a still-live orphan, then adopts any result a
dead runner never recorded, sets unreadable results aside and re-runs them
(`study.recovery`). A failed manifest write (a full disk) ends the study with a
WriteError naming the file; the manifest on disk stays the last consistent state, and the
resume adopts what was written since.

Layout: ``<results_dir>[/<output_dir>]/<study_name>_<timestamp>/`` holds the manifest, the
summary, the lock file ``.study.lock``, ``failures/<position>_<label>.txt`` and one run
directory per attempt (made here, never reused, so a re-run after a crash never
overwrites a partial one).

The idle-power baseline is shared across the study's experiments by the energy layer's
on-disk cache (keyed by GPU, with a TTL); each child reads it, nothing here disables it.

Gaps: ``config_gap_seconds`` between experiments of one cycle and ``cycle_gap_seconds``
when the cycle number changes (in grouped order that is every step), waited with a
blocking ``Event.wait`` that Ctrl-C interrupts; skipped with ``no_gaps=True``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llenergymeasure.clock import utc_now
from llenergymeasure.exceptions import ResultFileError, StudyDirError, StudyError
from llenergymeasure.progress import ExperimentTick, NullProgress, Progress
from llenergymeasure.redaction import register_secrets, scrub, secret_values
from llenergymeasure.results.filenames import (
    STUDY_SUMMARY_FILENAME,
    default_experiment_name,
    safe_component,
)
from llenergymeasure.results.persistence import atomic_write_text, new_run_dir, read_result
from llenergymeasure.study import recovery
from llenergymeasure.study.child import Outcome, WorkerTarget, stop_fork_server
from llenergymeasure.study.lock import StudyLock
from llenergymeasure.study.manifest import (
    ManifestEntry,
    ManifestStatus,
    RunnerInfo,
    StudyManifest,
    check_same_design,
    find_resumable,
    new_manifest,
    read_manifest,
    write_manifest,
)
from llenergymeasure.study.runners import RunnerSet
from llenergymeasure.study.signals import Interrupted, StopSignals, signal_name, signal_of
from llenergymeasure.study.worker import (
    ProgressMessage,
    StageMessage,
    WorkerRequest,
    experiment_worker,
)

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig, StudyConfig
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.domain.study import StudyResult
    from llenergymeasure.study.grid import PlannedExperiment, StudyPlan
    from llenergymeasure.study.slurm.submit import JobFunction, JobSystem

logger = logging.getLogger(__name__)

#: ``<study dir>/cache``: built once per study, shared by its experiments (never results).
STUDY_CACHE_DIRNAME = "cache"


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
        self.runners = RunnerSet(user_config, self.worker_target)
        self.verbosity = verbosity
        self.retry_failed = retry_failed
        self.job_system = job_system  # Slurm executor: None = submitit on this cluster
        self.job_function = job_function  # Slurm executor: None = run_experiment_job
        self.time_source = time_source  # Slurm executor: None = monotonic clock, Event.wait
        self._wake = threading.Event()  # never set: gaps are interruptible waits
        self._gap_s = 0.0
        self._durations_s: list[float] = []
        self._warnings: list[str] = []
        self._stops = StopSignals()
        self._lock: StudyLock | None = None
        self._resuming = False

    # ---- top level ------------------------------------------------------------------------
    def run(self) -> StudyResult:
        """Run (or resume) the study; returns the StudyResult, also written to disk.

        Raises StudyLockedError / StudyDirError (exit 2) before touching anything when the
        directory is held by another runner or cannot be resumed; ``Interrupted`` after a
        stop signal (the study is then marked interrupted and summarised).
        """
        t0 = time.monotonic()
        with self._stops:
            try:
                plan, study_dir, manifest = self._open()
                try:
                    if self._resuming:
                        self._recover(plan, study_dir, manifest)
                    self._start(plan, study_dir, manifest)
                    self._run_pending(plan, study_dir, manifest)
                    return self._write_summary(plan, study_dir, manifest, time.monotonic() - t0)
                except KeyboardInterrupt as e:
                    stop = self._interrupted(e, plan, study_dir, manifest, time.monotonic() - t0)
                    if stop is e:
                        raise
                    raise stop from e
                except BaseException as e:
                    self._finish_quietly(study_dir, manifest, "failed", f"study runner error: {e}")
                    raise
            finally:
                stop_fork_server()  # its children have all ended; the next study starts its own
                if self._lock is not None:
                    self._lock.release()

    def _open(self) -> tuple[StudyPlan, Path, StudyManifest]:
        """Expand the study, open a fresh study dir or the one to resume, and lock it."""
        study_dir = self._dir_to_resume()
        self._resuming = study_dir is not None
        if study_dir is None:
            plan = self._expand(self.study)
            self._preflight_runners(plan)  # before any dir
            study_dir = new_run_dir(self._parent_dir(), plan.study_name)
            self._lock = StudyLock.acquire(study_dir)
            manifest = new_manifest(plan)
            write_manifest(study_dir, manifest)
            _register_secrets(plan)
            return plan, study_dir, manifest
        if not study_dir.is_dir():
            raise StudyDirError(
                f"{study_dir} is not a directory -> give the study directory to resume "
                "(the one holding study_manifest.json)"
            )
        self._lock = StudyLock.acquire(study_dir)  # before reading: the holder may write it
        manifest = read_manifest(study_dir)
        plan = self._expand(self._with_stored_seed(manifest))
        check_same_design(manifest, plan)
        self._preflight_runners(plan)
        _register_secrets(plan)
        return plan, study_dir, manifest

    def _preflight_runners(self, plan: StudyPlan) -> None:
        """Docker, its NVIDIA runtime and the images, for experiments that run in containers
        of this host (the Slurm executor does not apply ``runners:``: nothing to check)."""
        if self.study.execution.executor != "slurm":
            self.runners.preflight(p.config for p in plan.experiments)

    def _start(self, plan: StudyPlan, study_dir: Path, manifest: StudyManifest) -> None:
        """Show the plan's notes and mark the study running."""
        for note in plan.notes:
            self.progress.message(note)
        manifest.status, manifest.stopped_reason = "running", None
        write_manifest(study_dir, manifest)

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

    def _recover(self, plan: StudyPlan, study_dir: Path, manifest: StudyManifest) -> None:
        """What an earlier run left (`study.recovery`): wait for or stop live orphans
        first, then adopt finished results, set unreadable ones aside, and put back to
        pending whatever must run again. Old run dirs and files stay.

        Slurm: an entry running as a Slurm job stays running (the executor re-attaches to
        its job, by id or name: never a second job), and a failed one stays failed unless
        ``retry_failed``; a local resume of a study with live Slurm jobs is refused."""
        manifest.sessions += 1
        on_slurm = self.study.execution.executor == "slurm"
        live_jobs = [e for e in manifest.entries if e.status == "running" and e.slurm_jobs]
        if live_jobs and not on_slurm:
            raise StudyError(
                f"{len(live_jobs)} experiment(s) of {study_dir} run as Slurm jobs -> resume "
                "with execution.executor: slurm (the jobs are re-attached, never re-submitted)"
            )
        if not on_slurm:  # Slurm jobs never run in this host's containers
            configs = [p.config for p in plan.experiments]
            for note in self.runners.remove_leftovers(study_dir, configs):
                self.progress.message(note)  # containers an earlier run left: removed
        for e in manifest.entries:
            if e.status == "running":
                self._settle_orphan(e)
        for e in manifest.entries:
            self._recover_entry(e, study_dir)
        write_manifest(study_dir, manifest)
        failed = sum(e.status == "failed" for e in manifest.entries)
        if failed:
            self.progress.message(
                f"{failed} failed experiment(s) kept as failed: --retry-failed re-runs them"
            )
        done = sum(e.status == "completed" for e in manifest.entries)
        self.progress.message(
            f"resuming {study_dir}: {done} of {len(manifest.entries)} experiments already done"
        )

    def _recover_entry(self, e: ManifestEntry, study_dir: Path) -> None:
        """One entry on resume: keep, adopt or reset (see `_recover`)."""
        where = f"{e.label} cycle {e.cycle}"
        on_slurm = self.study.execution.executor == "slurm"
        if on_slurm and e.status == "running" and e.slurm_jobs:
            return  # the Slurm executor re-attaches to its job and collects (or adopts) it
        if e.status == "completed":
            problem = self._completed_problem(e, study_dir)
            if problem is None:
                return
            self._warnings.append(f"{where}: {problem}: re-run")
            _reset(e)
            return
        found = recovery.adoptable_result(study_dir, e)
        if found is not None:
            recovery.adopt(e, found, study_dir)
            self._warnings.append(
                f"{where}: adopted the finished result an earlier run did not record "
                f"({e.result_path})"
            )
            self.progress.message(f"{where}: adopted {e.result_path} (finished, not recorded)")
            return
        if e.status == "failed" and on_slurm and not self.retry_failed:
            return  # kept: a Slurm failure re-runs only with --retry-failed
        if e.status in ("running", "failed"):
            _reset(e)

    def _completed_problem(self, e: ManifestEntry, study_dir: Path) -> str | None:
        """Why a completed entry's result cannot be used (None: it can). An unreadable
        file is renamed aside, never deleted."""
        path = study_dir / e.result_path if e.result_path else None
        if path is None or not path.is_file():
            return "result file missing"
        try:
            read_result(path)
        except ResultFileError as err:  # not a result: renamed aside, never deleted
            aside = recovery.set_aside(path)
            e.set_aside = [*e.set_aside, recovery.relative(aside, study_dir)]
            return f"unreadable result ({err}); kept as {aside.name}"
        except OSError as err:  # cannot be read (permissions, I/O): left where it is
            return f"unreadable result {path} ({err.strerror or err})"
        return None

    def _settle_orphan(self, e: ManifestEntry) -> None:
        """An experiment process of an earlier run still alive: wait for it (up to its
        timeout), then stop it. Nothing else starts meanwhile (one experiment at a time)."""
        info = e.runner
        if info is None or info.kind != "local" or info.pid is None:
            return
        where = f"{e.label} cycle {e.cycle}"
        if info.host != socket.gethostname():
            self._warnings.append(
                f"{where}: its experiment ran on host {info.host} (pid {info.pid}); this host "
                "cannot check it: if it still runs there, stop it"
            )
            return
        if not recovery.is_alive(info):
            return
        wait_s = recovery.remaining_s(e, self.study.execution.experiment_timeout_seconds)
        self.progress.message(
            f"{where}: its experiment process from an earlier run (pid {info.pid}) is still "
            f"running: waiting up to {wait_s:.0f} s for it before anything else starts"
        )
        if not recovery.wait_for_exit(info.pid, wait_s):
            self.progress.message(f"{where}: stopping pid {info.pid} (past its timeout)")
            recovery.stop_process(info.pid)

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
            entry.gap_before_s = self._gap(previous, entry) if previous is not None else None
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

        def started(info: RunnerInfo) -> None:
            with self._stops.critical():
                entry.runner = info
                write_manifest(study_dir, manifest)

        try:
            self.progress.experiment_started(tick)
            timeout_s = self.study.execution.experiment_timeout_seconds
            runner = self.runners.for_config(planned.config)
            outcome = runner.run(request, timeout_s, self._forward, started)
        except KeyboardInterrupt:
            self._after_stop(entry, study_dir)  # the child is stopped by now
            raise
        with self._stops.critical():
            if outcome.stop_signal is not None:
                self._after_stop(entry, study_dir)
            else:
                self._durations_s.append(outcome.wall_s)
                self._record(entry, outcome, study_dir)
            write_manifest(study_dir, manifest)
        if outcome.stop_signal is not None:
            self._stops.raise_stop(outcome.stop_signal)  # the job was signalled: stop it all
        detail = "" if outcome.ok else (outcome.reason or "")
        self.progress.experiment_finished(tick, entry.status, detail)
        return _is_completed(entry)

    def _attempt_dir(self, config: ExperimentConfig, study_dir: Path) -> Path:
        """A new run directory for one attempt (the orchestrator's naming and layout)."""
        base = study_dir / config.output_dir if config.output_dir else study_dir
        name = config.name or default_experiment_name(config.model, config.backend)
        return new_run_dir(base, name)

    def _after_stop(self, entry: ManifestEntry, study_dir: Path) -> None:
        """The study is stopping and the entry's child is dead: adopt its result if it got
        written, else put the entry back to pending (its attempt still counts)."""
        found = recovery.adoptable_result(study_dir, entry)
        if found is not None:
            recovery.adopt(entry, found, study_dir)
            return
        entry.status, entry.started_at = "pending", None

    def _begin_attempt(
        self,
        entry: ManifestEntry,
        planned: PlannedExperiment,
        manifest: StudyManifest,
        study_dir: Path,
    ) -> WorkerRequest:
        """Mark the entry running (one more attempt) in a new run directory made here, and
        write the manifest; the request for whoever runs it (a child, a Slurm job)."""
        with self._stops.critical():
            run_dir = self._attempt_dir(planned.config, study_dir)
            entry.status, entry.started_at, entry.ended_at = "running", utc_now(), None
            entry.run_dir, entry.runner = recovery.relative(run_dir, study_dir), None
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
            run_dir=run_dir,
            cache_dir=study_dir / STUDY_CACHE_DIRNAME,
        )

    # ---- the Slurm executor ---------------------------------------------------------------
    def _run_on_slurm(self, plan: StudyPlan, study_dir: Path, manifest: StudyManifest) -> None:
        """Every pending entry as a Slurm job (`study.slurm.executor`)."""
        from llenergymeasure.study.slurm.executor import SlurmExecutor, StudyContext
        from llenergymeasure.study.slurm.settings import job_folder
        from llenergymeasure.study.slurm.submit import SubmititJobs

        jobs = self.job_system or SubmititJobs(job_folder(study_dir), self.study.slurm.python)
        note = _runners_not_applied(self.user_config, plan)
        if note is not None:
            self.progress.message(note)
            self._warnings.append(note)

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
            critical=self._stops.critical,
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
        entry.save_s, entry.exit_s = outcome.save_s, outcome.exit_s
        if outcome.ok and outcome.result_path is not None:
            entry.status = "completed"
            entry.result_path = _relative(outcome.result_path, study_dir)
            if outcome.summary is not None:
                entry.measurement_s = outcome.summary.measurement_s
                entry.metrics = dict(outcome.summary.metrics)
            return
        found = recovery.adoptable_result(study_dir, entry)
        if found is not None:  # it wrote its result, then crashed: the result stands
            recovery.adopt(entry, found, study_dir)
            entry.duration_s = outcome.wall_s
            self._warnings.append(
                f"{entry.label} cycle {entry.cycle}: {outcome.reason} after writing a "
                "complete result: the result was kept"
            )
            return
        entry.status = "failed"
        entry.error = scrub(outcome.reason) if outcome.reason else None
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
    def _gap(self, previous: ManifestEntry, nxt: ManifestEntry) -> float:
        """Thermal-recovery wait between two experiments (blocking, Ctrl-C interrupts it);
        the seconds waited."""
        ex = self.study.execution
        is_cycle = nxt.cycle != previous.cycle
        seconds = ex.cycle_gap_seconds if is_cycle else ex.config_gap_seconds
        if self.no_gaps or seconds <= 0:
            return 0.0
        kind = "cycle" if is_cycle else "config"
        self.progress.message(f"waiting {seconds:g} s ({kind} gap, thermal recovery)")
        t0 = time.monotonic()
        try:
            self._wake.wait(seconds)
        finally:
            waited = time.monotonic() - t0
            self._gap_s += waited
        return waited

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

    def _finish_quietly(
        self,
        study_dir: Path,
        manifest: StudyManifest,
        status: ManifestStatus,
        reason: str | None,
    ) -> None:
        """`_finish` while another error propagates: a failing write (a full disk) is
        logged, not raised over the error that matters."""
        try:
            self._finish(study_dir, manifest, status, reason)
        except Exception as err:
            logger.warning("could not mark the study %s: %s", status, err)

    def _interrupted(
        self,
        error: KeyboardInterrupt,
        plan: StudyPlan,
        study_dir: Path,
        manifest: StudyManifest,
        wall_s: float,
    ) -> Interrupted:
        """Mark the study interrupted (naming the signal) and write the summary of what
        finished; the Interrupted to raise, with the study directory and summary."""
        self._stops.stopping = True  # from now on further stop signals are ignored
        signum = signal_of(error)
        self._finish_quietly(
            study_dir, manifest, "interrupted", f"interrupted by {signal_name(signum)}"
        )
        result = None
        try:
            result = self._write_summary(plan, study_dir, manifest, wall_s)
        except Exception as err:
            logger.warning("could not write the study summary: %s", err)
        stop = error if isinstance(error, Interrupted) else Interrupted(signum)
        stop.study_dir, stop.result = study_dir, result
        self._requeue_if_asked(signum)
        return stop

    def _requeue_if_asked(self, signum: int) -> None:
        """Inside a Slurm job, SIGUSR1 (``--signal=B:USR1@<s>``) means the time is nearly up:
        requeue this job so that ``llem run ... --resume`` continues (`study.allocation`)."""
        from llenergymeasure.study.allocation import REQUEUE_SIGNAL, requeue_self, slurm_job_id

        job_id = slurm_job_id()
        if signum != REQUEUE_SIGNAL or job_id is None:
            return
        problem = requeue_self(job_id)
        if problem is None:
            self.progress.message(
                f"requeued Slurm job {job_id}: it runs again and --resume continues the study"
            )
        else:
            self.progress.message(f"could not requeue Slurm job {job_id}: {problem}")

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
    atomic_write_text(path, scrub("\n".join(header) + (outcome.detail or "") + "\n"))
    return path


def _runners_not_applied(user_config: UserConfig | None, plan: StudyPlan) -> str | None:
    """The user config's container runners (``runners:``) that a Slurm study cannot use."""
    if user_config is None:
        return None
    backends = sorted({p.config.backend for p in plan.experiments})
    runners = [f"{b}={user_config.runner_for(b)}" for b in backends]
    contained = [r for b, r in zip(backends, runners, strict=True) if r != f"{b}=local"]
    if not contained:
        return None
    return (
        f"runners: {', '.join(contained)} is not applied by the Slurm executor: each job runs "
        "its experiment in the job's own Python (slurm.python and slurm.setup set up the "
        "environment on the nodes)"
    )


def _write(study_dir: Path, manifest: StudyManifest) -> None:
    """Rewrite the manifest (atomically)."""
    write_manifest(study_dir, manifest)


def _relative(path: Path, study_dir: Path) -> str:
    """``path`` relative to the study dir when inside it, else absolute."""
    return recovery.relative(path, study_dir)


def _register_secrets(plan: StudyPlan) -> None:
    """Credential values of the study's configs: scrubbed from failure files and logs."""
    for u in plan.unique_configs:
        register_secrets(secret_values(u.config.model_dump(mode="json")))


def _is_completed(entry: ManifestEntry) -> bool:
    """Whether the entry ended completed (its status changes under the caller's feet)."""
    return entry.status == "completed"


def _reset(entry: ManifestEntry) -> None:
    """Back to pending: it runs again (its run dir and files stay where they are)."""
    entry.status, entry.result_path, entry.failure_path, entry.error = "pending", None, None, None
