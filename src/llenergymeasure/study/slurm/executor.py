"""The study side of the Slurm executor: submit, track, wait without spinning, collect.

Each pending entry of the manifest becomes one Slurm job (`job.run_experiment_job`), in
manifest (run) order. The study process:

* **submits** while fewer than ``slurm.max_parallel`` of its jobs are queued or running and
  the gap rule below allows; before ``sbatch`` the entry is marked running with a
  `SlurmJobRecord` naming the job, then the job id is recorded, both written to the
  manifest at once (a study killed in between finds the job again by its name);
* **waits** on a blocking, interruptible ``Event.wait`` of ``slurm.poll_interval_s`` (never a
  spin), then asks ``sacct`` about all its jobs in one call and looks for their result
  pickles;
* **collects** a finished job: a returned `JobReport` is a completed entry (its result.json
  is in the study directory, written by the job in the layout of a local run); anything
  else is a failed entry with Slurm's state, exit code and reason (`states.classify`), a
  failure file with the trace and the end of the job's logs, which stay in
  ``<study_dir>/slurm/<job id>/``.

**GPUs, order and gaps.** Every job asks for its own ``gpus_per_job`` GPUs, and Slurm never
gives one GPU to two jobs at once: so no two experiments of the study share a GPU, at any
``max_parallel``. Jobs are submitted in run order. ``max_parallel: 1`` is today's local
sequence: one experiment at a time, each submitted when the previous ended plus its gap
(``config_gap_seconds``, or ``cycle_gap_seconds`` when the cycle changes). Above 1 the rule
is stated per GPU: *a GPU rests at least the gap between two experiments of the study*.
A new job is submitted only once the gap has passed since the latest end of any of the
study's experiments, so whichever of the study's GPUs Slurm gives it has rested that long;
while none has ended yet, the first ``max_parallel`` go at once, each to a GPU the study has
not used. (Which GPU a job gets is Slurm's choice, and other users' jobs are outside the
rule.) The gap is skipped with ``--no-gaps``.

**Durability.** The study process dying does not stop its jobs. A resume re-attaches to the
entries still marked running (by their job ids, or their job names when the id was never
recorded): a live job is waited for, a finished one collected, nothing is submitted twice
for one (config hash, cycle). Ctrl-C, SIGTERM and SIGHUP stop the study process the same way:
the running jobs keep running and a resume picks them up (``scancel`` stops them).

**Bounded waits.** Every wait is one poll period; a job is given up (cancelled, failed) when
sacct has not heard of it ``UNKNOWN_GRACE_S`` after submission, when it is still queued after
``slurm.max_pending_hours``, or still running ``OVERRUN_GRACE_S`` past its time limit; sacct
failing for ``SACCT_GIVE_UP_S`` in a row stops the study with that error.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.clock import utc_now
from llenergymeasure.exceptions import StudyError
from llenergymeasure.study.child import Outcome
from llenergymeasure.study.manifest import ManifestEntry, RunnerInfo, SlurmJobRecord
from llenergymeasure.study.slurm import settings
from llenergymeasure.study.slurm.job import JobReport, run_experiment_job
from llenergymeasure.study.slurm.sacct import SacctError, SacctRecord
from llenergymeasure.study.slurm.states import JobEnd, classify, is_active
from llenergymeasure.study.slurm.submit import JobFunction, JobSystem, SubmitError, log_tail

if TYPE_CHECKING:
    from llenergymeasure.config.models import StudyConfig
    from llenergymeasure.progress import ExperimentTick, Progress
    from llenergymeasure.study.grid import PlannedExperiment, StudyPlan
    from llenergymeasure.study.manifest import ManifestStatus, StudyManifest
    from llenergymeasure.study.worker import WorkerRequest

logger = logging.getLogger(__name__)

UNKNOWN_GRACE_S = 300.0  # sacct has no record of a submitted job after this long: lost
PICKLE_GRACE_S = 15.0  # sacct says it ended, the result pickle may lag (NFS): wait this long
PREEMPTED_SETTLE_S = 120.0  # PREEMPTED and not requeued within this long: final
OVERRUN_GRACE_S = 900.0  # still RUNNING this long past --time: give up on it
SACCT_GIVE_UP_S = 900.0  # sacct failing this long in a row: stop the study


@dataclass
class StudyContext:
    """What the executor needs from the StudyRunner (its manifest rules stay there)."""

    study: StudyConfig
    plan: StudyPlan
    study_dir: Path
    manifest: StudyManifest
    progress: Progress
    no_gaps: bool
    #: entry -> running (attempt counted, manifest written); the request for its job
    begin: Callable[[ManifestEntry, PlannedExperiment], WorkerRequest]
    #: a finished attempt's outcome -> the entry (and its failure file); caller writes
    record: Callable[[ManifestEntry, Outcome], None]
    write: Callable[[], None]
    #: a block during which stop signals are held (so the manifest is never half-updated)
    critical: Callable[[], AbstractContextManager[None]]
    finish: Callable[[ManifestStatus, str | None], None]
    #: a blocking wait of at most this many seconds that a stop signal interrupts
    wait: Callable[[float], object]
    tick: Callable[[ManifestEntry], ExperimentTick]
    warnings: list[str] = field(default_factory=list)
    gap_s: float = 0.0  # time spent waiting only for gaps (added here)
    durations_s: list[float] = field(default_factory=list)


@dataclass
class _Tracked:
    """A job of this study that is queued or running."""

    entry: ManifestEntry
    record: SlurmJobRecord
    seen_final_at: float | None = None  # monotonic: when sacct first said it ended
    started_mono: float = field(default_factory=time.monotonic)


class SlurmExecutor:
    """Runs a study's pending entries as Slurm jobs (see the module docstring)."""

    def __init__(
        self,
        ctx: StudyContext,
        jobs: JobSystem,
        job_function: JobFunction | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.job_function: JobFunction = job_function or run_experiment_job
        self.clock = clock
        self.slurm = ctx.study.slurm
        self.time_min = settings.time_limit_min(ctx.study)
        self.running: dict[int, _Tracked] = {}  # by entry position
        self._last_end: float | None = None  # monotonic: latest end of one of our jobs
        self._previous: ManifestEntry | None = None  # the entry submitted last
        self._consecutive = 0
        self._stop_reason: str | None = None
        self._sacct_failing_since: float | None = None
        self._announced_gap: int | None = None
        self._by_key = {(p.config_hash, p.cycle): p for p in ctx.plan.experiments}
        self._reports: list[tuple[SlurmJobRecord, JobReport]] = []  # this session's successes

    # ---- top level ------------------------------------------------------------------------
    def run(self) -> None:
        """Re-attach to live jobs, then submit and collect until every entry has run."""
        problems = settings.plan_problems(self.ctx.plan, self.slurm)
        if problems:
            raise StudyError("cannot run on Slurm:\n" + "\n".join(f"  - {p}" for p in problems))
        for note in settings.notes(self.ctx.study):
            self.ctx.progress.message(note)
        self._reattach()
        queue = [e for e in self.ctx.manifest.entries if e.status == "pending"]
        try:
            self._loop(queue)
        except KeyboardInterrupt:
            self._left_running()
            raise
        self._end_status()

    def _loop(self, queue: list[ManifestEntry]) -> None:
        """Submit what may go, wait one period, poll; until nothing is queued or running."""
        while True:
            while queue and self._stop_reason is None and self._may_submit(queue[0]):
                self._submit(queue.pop(0))
            if not self.running and (not queue or self._stop_reason is not None):
                return
            wait_s = self._wait_s(queue)
            gap_wait = bool(queue) and len(self.running) < self.slurm.max_parallel
            t0 = self.clock()
            self.ctx.wait(wait_s)
            if gap_wait and self._stop_reason is None:
                self.ctx.gap_s += self.clock() - t0
            if self.running:
                self._poll()

    # ---- submitting -----------------------------------------------------------------------
    def _may_submit(self, nxt: ManifestEntry) -> bool:
        """Capacity left and the gap since the latest end (per-GPU rest) has passed."""
        if len(self.running) >= self.slurm.max_parallel:
            return False
        ready_at = self._ready_at(nxt)
        if ready_at <= self.clock():
            return True
        if self._announced_gap != nxt.position:
            self._announced_gap = nxt.position
            kind = "cycle" if self._is_cycle_gap(nxt) else "config"
            seconds = ready_at - self.clock()
            self.ctx.progress.message(
                f"waiting {seconds:.0f} s ({kind} gap, thermal recovery) before {nxt.label}"
            )
        return False

    def _gap_for(self, nxt: ManifestEntry) -> float:
        ex = self.ctx.study.execution
        if self.ctx.no_gaps or self._previous is None:
            return 0.0
        return ex.cycle_gap_seconds if self._is_cycle_gap(nxt) else ex.config_gap_seconds

    def _is_cycle_gap(self, nxt: ManifestEntry) -> bool:
        return self._previous is not None and nxt.cycle != self._previous.cycle

    def _ready_at(self, nxt: ManifestEntry) -> float:
        """When ``nxt`` may be submitted: the latest end of our jobs plus its gap."""
        if self._last_end is None:
            return float("-inf")
        return self._last_end + self._gap_for(nxt)

    def _wait_s(self, queue: list[ManifestEntry]) -> float:
        """One poll period, shorter when a gap ends sooner and a job may then go."""
        wait = self.slurm.poll_interval_s if self.running else 0.0
        if queue and len(self.running) < self.slurm.max_parallel and self._stop_reason is None:
            until = self._ready_at(queue[0]) - self.clock()
            wait = min(wait, until) if self.running else until
        return max(0.05, wait)

    def _submit(self, entry: ManifestEntry) -> None:
        """Mark the entry running with its job's name, sbatch, record the id."""
        planned = self._by_key.get(entry.key)
        if planned is None:  # same design guarantees this cannot happen
            raise StudyError(f"manifest entry {entry.label} cycle {entry.cycle} not in plan")
        study_dir = self.ctx.study_dir
        name = settings.job_name(study_dir.name, entry.position, entry.cycle)
        name = f"{name}-a{entry.attempts + 1}"
        with self.ctx.critical():
            record = SlurmJobRecord(
                name=name,
                submitted_at=utc_now(),
                folder=settings.JOB_FOLDER,
            )
            entry.slurm_jobs = [*entry.slurm_jobs, record]
            request = self.ctx.begin(entry, planned)  # writes the manifest
            record = entry.slurm_jobs[-1]
            params = settings.executor_parameters(
                self.slurm, time_min=self.time_min, name=name, comment=study_dir.name
            )
            try:
                job_id = self.jobs.submit(self.job_function, request, params)
            except SubmitError as e:
                self._record_outcome(
                    entry, record, Outcome(ok=False, wall_s=0.0, reason=str(e)[:300], detail=str(e))
                )
                return
            files = self.jobs.files(job_id)
            record.job_id = job_id
            record.state = "SUBMITTED"
            entry.runner = RunnerInfo(
                kind="slurm", host=socket.gethostname(), job_id=job_id, study_pid=os.getpid()
            )
            record.folder = _relative(files.folder, study_dir)
            record.stdout = _relative(files.stdout, study_dir)
            record.stderr = _relative(files.stderr, study_dir)
            entry.slurm_jobs = [*entry.slurm_jobs[:-1], record]
            self.ctx.write()
        self.running[entry.position] = _Tracked(entry, entry.slurm_jobs[-1])
        self._previous = entry
        self.ctx.progress.experiment_started(self.ctx.tick(entry))
        self.ctx.progress.message(f"{entry.label} cycle {entry.cycle}: Slurm job {job_id}")

    # ---- re-attaching ---------------------------------------------------------------------
    def _reattach(self) -> None:
        """Track the entries an earlier run left running (see the module docstring)."""
        changed = False
        for entry in self.ctx.manifest.entries:
            if entry.status != "running":
                continue
            record = entry.slurm_job
            if record is None:
                entry.status, entry.started_at = "pending", None
                changed = True
                continue
            if record.job_id is None:
                found = self._find_unrecorded(record)
                if found is None:  # sbatch never ran (or never returned a job)
                    entry.slurm_jobs = entry.slurm_jobs[:-1]
                    entry.status, entry.started_at = "pending", None
                    changed = True
                    continue
                record.job_id = found
                entry.slurm_jobs = [*entry.slurm_jobs[:-1], record]
                changed = True
            self.running[entry.position] = _Tracked(entry, entry.slurm_jobs[-1])
            self._previous = entry
            self.ctx.progress.message(
                f"{entry.label} cycle {entry.cycle}: re-attached to Slurm job {record.job_id}"
            )
        if changed:
            self.ctx.write()
        if self.running:
            self._poll()

    def _find_unrecorded(self, record: SlurmJobRecord) -> str | None:
        """The job of a record whose id was never written, by its unique name."""
        since = record.submitted_at.timestamp()
        try:
            ids = self.jobs.find(record.name, since)
        except SacctError as e:
            raise StudyError(
                f"cannot tell whether job {record.name} was submitted ({e}): resume again "
                "once sacct answers"
            ) from e
        if len(ids) > 1:  # cannot happen (one sbatch per record); keep the first
            for extra in ids[1:]:
                self.jobs.cancel(extra)
            self.ctx.warnings.append(f"{record.name}: jobs {ids[1:]} cancelled (duplicates)")
        return ids[0] if ids else None

    # ---- polling --------------------------------------------------------------------------
    def _poll(self) -> None:
        """One sacct call for every tracked job; collect those that ended."""
        ids = [t.record.job_id for t in self.running.values() if t.record.job_id]
        records = self._sacct(ids)
        changed = False
        for position in list(self.running):
            tracked = self.running[position]
            changed |= self._check(tracked, records.get(str(tracked.record.job_id)))
        if changed:
            with self.ctx.critical():
                self.ctx.write()

    def _sacct(self, ids: list[str]) -> dict[str, SacctRecord]:
        """sacct's records; {} while it fails (bounded: SACCT_GIVE_UP_S in a row)."""
        try:
            records = self.jobs.states(ids)
        except SacctError as e:
            now = self.clock()
            if self._sacct_failing_since is None:
                self._sacct_failing_since = now
                self.ctx.progress.message(f"sacct failed ({e}); retrying at every poll")
            elif now - self._sacct_failing_since > SACCT_GIVE_UP_S:
                raise StudyError(
                    f"sacct has failed for {SACCT_GIVE_UP_S:.0f} s: {e} -> the jobs keep "
                    "running; resume once sacct answers"
                ) from e
            return {}
        self._sacct_failing_since = None
        return records

    def _check(self, tracked: _Tracked, rec: SacctRecord | None) -> bool:
        """Update one job from its sacct record; collect it if it ended. True if the
        manifest changed."""
        record = tracked.record
        assert record.job_id is not None
        state = rec.base_state if rec is not None else None
        changed = False
        if rec is not None and (state != record.state or (rec.node_list and not record.node)):
            record.state = state
            record.node = rec.node_list or record.node
            record.exit_code = rec.exit_code or record.exit_code
            runner = tracked.entry.runner
            if record.node and runner is not None and runner.job_id == record.job_id:
                tracked.entry.runner = runner.model_copy(update={"host": record.node})
            changed = True
        result = self.jobs.result(record.job_id)
        if result is not None:
            self._collect(tracked, rec, result)
            return True
        if state is not None and not is_active(state):
            now = self.clock()
            tracked.seen_final_at = tracked.seen_final_at or now
            settle = PREEMPTED_SETTLE_S if state == "PREEMPTED" else PICKLE_GRACE_S
            waits_for_pickle = state in ("COMPLETED", "FAILED", "PREEMPTED")
            if not waits_for_pickle or now - tracked.seen_final_at >= settle:
                self._collect(tracked, rec, None)
                return True
        elif state is not None:
            tracked.seen_final_at = None  # e.g. PREEMPTED -> REQUEUED -> PENDING
        give_up = self._overdue(tracked, state)
        if give_up is not None:
            self.jobs.cancel(record.job_id)
            outcome = Outcome(
                ok=False, wall_s=self._wall_s(tracked), reason=give_up, detail=give_up
            )
            record.state = state or "UNKNOWN"
            self._finished(tracked, outcome)
            return True
        return changed

    def _overdue(self, tracked: _Tracked, state: str | None) -> str | None:
        """Why to give up on a job that has not ended (None: keep waiting)."""
        record = tracked.record
        age_s = (utc_now() - record.submitted_at).total_seconds()
        if state is None or state == "UNKNOWN":
            if age_s > UNKNOWN_GRACE_S and self._sacct_failing_since is None:
                return (
                    f"Slurm job {record.job_id}: sacct has no record of it {age_s:.0f} s after "
                    "submission (lost, or accounting is not enabled): cancelled"
                )
            return None
        if state == "PENDING" and age_s > self.slurm.max_pending_hours * 3600.0:
            return (
                f"Slurm job {record.job_id}: still PENDING after "
                f"slurm.max_pending_hours={self.slurm.max_pending_hours:g}: cancelled"
            )
        if state == "RUNNING" and age_s > self.time_min * 60.0 + OVERRUN_GRACE_S:
            return (
                f"Slurm job {record.job_id}: still RUNNING {age_s:.0f} s after submission, past "
                f"its --time={self.time_min} min: cancelled"
            )
        return None

    # ---- collecting -----------------------------------------------------------------------
    def _collect(
        self, tracked: _Tracked, rec: SacctRecord | None, result: tuple[str, Any] | None
    ) -> None:
        """A finished job -> its entry's outcome."""
        record = tracked.record
        assert record.job_id is not None
        files = self.jobs.files(record.job_id)
        wall_s = self._wall_s(tracked)
        if result is not None and result[0] == "success":
            outcome = self._success(record, result[1], wall_s)
            if outcome is not None:
                record.state = "COMPLETED"
                self._finished(tracked, outcome)
                return
            result = ("error", f"the job returned {type(result[1]).__name__}, not a JobReport")
        end = JobEnd(
            job_id=record.job_id,
            sacct_state=rec.base_state if rec is not None else record.state,
            exit_code=(rec.exit_code if rec is not None else None) or record.exit_code,
            node=(rec.node_list if rec is not None else None) or record.node,
            error_trace=str(result[1]) if result is not None else None,
            stderr_tail=log_tail(files),
            time_limit_min=self.time_min,
            signal_delay_s=self.slurm.signal_delay_s,
        )
        verdict = classify(end)
        record.state = verdict.state
        record.exit_code = end.exit_code
        detail = "\n".join(
            [
                f"slurm job: {record.job_id} ({record.name}), state {verdict.state}, "
                f"exit code {end.exit_code or '?'}, node {end.node or '?'}",
                f"logs (kept): {files.stdout} and {files.stderr}",
                "",
                verdict.detail or "",
                "" if result is None else end.stderr_tail,
            ]
        )
        self._finished(
            tracked, Outcome(ok=False, wall_s=wall_s, reason=verdict.reason, detail=detail)
        )

    def _success(self, record: SlurmJobRecord, value: Any, wall_s: float) -> Outcome | None:
        """A returned JobReport -> completed (None: not a report we can use)."""
        if not isinstance(value, JobReport):
            return None
        record.node = value.host or record.node
        record.cuda_visible_devices = value.cuda_visible_devices
        self._check_gpu_sharing(record, value)
        path = Path(value.result_path)
        if not path.is_file():
            reason = f"Slurm job {record.job_id}: its result {path} is not on this file system"
            detail = (
                f"{reason}. The study directory must be on a file system shared by the "
                "compute nodes and the node running llem."
            )
            return Outcome(ok=False, wall_s=wall_s, reason=reason, detail=detail)
        return Outcome(ok=True, wall_s=wall_s, result_path=path, summary=value.summary)

    def _check_gpu_sharing(self, record: SlurmJobRecord, report: JobReport) -> None:
        """Warn (in the study's warnings) if this experiment overlapped in time with another
        of the study on the same node and GPU: Slurm should never allow it (it would, with
        GPU sharing: MPS or shards), and both energy figures would be wrong."""
        gpus = report.gpus
        if not gpus or report.started_at is None or report.ended_at is None:
            return
        for other_record, other in self._reports:
            if other.host != report.host or not (gpus & other.gpus):
                continue
            if other.started_at is None or other.ended_at is None:
                continue
            if report.started_at < other.ended_at and other.started_at < report.ended_at:
                self.ctx.warnings.append(
                    f"Slurm jobs {record.job_id} and {other_record.job_id} ran at the same time "
                    f"on GPU {','.join(sorted(gpus & other.gpus))} of {report.host}: their "
                    "energy figures include each other's (does the cluster share GPUs?)"
                )
        self._reports.append((record, report))

    def _finished(self, tracked: _Tracked, outcome: Outcome) -> None:
        """Record an ended job's outcome; count failures in a row; free its slot."""
        self.running.pop(tracked.entry.position, None)
        self._record_outcome(tracked.entry, tracked.record, outcome)
        self._last_end = self.clock()

    def _record_outcome(
        self, entry: ManifestEntry, record: SlurmJobRecord, outcome: Outcome
    ) -> None:
        with self.ctx.critical():
            record.ended_at = utc_now()
            if entry.slurm_jobs and entry.slurm_jobs[-1].name == record.name:
                entry.slurm_jobs = [*entry.slurm_jobs[:-1], record]
            self.ctx.record(entry, outcome)
            self.ctx.write()
        if outcome.ok:
            self.ctx.durations_s.append(outcome.wall_s)
        self.ctx.progress.experiment_finished(
            self.ctx.tick(entry), entry.status, "" if outcome.ok else (outcome.reason or "")
        )
        if self.slurm.max_parallel > 1:  # finishes interleave: say which one this was
            self.ctx.progress.message(
                f"{entry.label or 'experiment'} cycle {entry.cycle}: {entry.status} "
                f"(Slurm job {record.job_id})"
            )
        self._consecutive = 0 if entry.status == "completed" else self._consecutive + 1
        limit = self.ctx.study.execution.max_consecutive_failures
        if self._consecutive >= limit and self._stop_reason is None:
            self._stop_reason = (
                f"{self._consecutive} consecutive experiments failed "
                f"(execution.max_consecutive_failures={limit}); last: {entry.error}"
            )
            if self.running:
                self.ctx.progress.message(
                    f"{self._stop_reason}: submitting no more; waiting for the "
                    f"{len(self.running)} job(s) still running"
                )

    def _wall_s(self, tracked: _Tracked) -> float:
        """Seconds since the job was submitted (queue time included)."""
        return max(0.0, (utc_now() - tracked.record.submitted_at).total_seconds())

    # ---- the end --------------------------------------------------------------------------
    def _end_status(self) -> None:
        if self._stop_reason is not None:
            self.ctx.finish("stopped", self._stop_reason)
            return
        counts = self.ctx.manifest.counts()
        done = counts["completed"] == len(self.ctx.manifest.entries)
        self.ctx.finish("completed" if done else "failed", None)

    def _left_running(self) -> None:
        """The study process stops; its jobs do not."""
        ids = [str(t.record.job_id) for t in self.running.values() if t.record.job_id]
        if ids:
            self.ctx.progress.message(
                f"{len(ids)} Slurm job(s) keep running ({', '.join(ids)}): resume with "
                f"--resume to collect them, or stop them with: scancel {' '.join(ids)}"
            )

    def tracked_jobs(self) -> Iterator[str]:
        """Ids of the jobs this executor is waiting for."""
        return (str(t.record.job_id) for t in self.running.values() if t.record.job_id)


def _relative(path: Path, study_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(study_dir).resolve()))
    except ValueError:
        return str(Path(path).resolve())
