"""The launcher: one experiment across several worker processes (``launch_mode: processes``).

Why the tool spawns its workers itself rather than going through ``accelerate launch`` /
``torchrun`` (docs/measurement.md, "Several processes"): their elastic agent polls its
workers every ``monitor_interval`` (0.1 s) and, as soon as one exits non-zero, terminates
all the others (``torch.distributed.elastic.multiprocessing.api``: "if ALL procs are
finished or ANY have failed: ... terminate all running procs"), so one failed worker would
lose every result; and both re-enter through a CLI, which a study's spawn child would have
to shell out to. Here each worker is a ``multiprocessing`` ``spawn`` child (as study
children are), ``torch.distributed`` (gloo) is used only for the start barrier, and the
parent blocks on the workers' pipes and process sentinels (never spins: it would burn the
energy being measured).

Sequence (parent | workers)::

    spawn N workers, each with its CUDA_VISIBLE_DEVICES | load model, tokenise -> Loaded
    energy session over the GPUs the loaded workers occupy, idle baseline (models resident)
    Warmup(rank, size) to the loaded workers         | join gloo group (N > 1), warm up -> Ready
    open the energy window, Go to the ready workers  | barrier, own window, inference -> Done
    close the window when the last is Done (or dead)
    Energy(part of the report for its GPUs) to each  | write raw/process_<i>.json + .done
    join the workers; outcomes (completed / failed / crashed / stopped) -> LaunchOutcome

A worker that fails or dies is recorded and the others go on: their raw results stay usable
and the late aggregation flags the missing ones.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from llenergymeasure.domain.results import LaunchRecord, ProcessOutcome, core_fields
from llenergymeasure.exceptions import ExperimentError, PreflightError
from llenergymeasure.lifeline import describe_exit
from llenergymeasure.orchestration.process_worker import (
    Done,
    Energy,
    Failed,
    Go,
    Loaded,
    Ready,
    Stage,
    Stop,
    Warmup,
    WorkerSpec,
    Written,
    run_process_worker,
)
from llenergymeasure.results.aggregation import restrict_energy_report
from llenergymeasure.results.filenames import RENDEZVOUS_FILENAME
from llenergymeasure.results.persistence import raw_dir

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.energy.nvml import GpuDevice
    from llenergymeasure.core.energy.session import EnergySession
    from llenergymeasure.datasets.types import Prompt
    from llenergymeasure.domain.energy import EnergyReport
    from llenergymeasure.orchestration.assemble import RunRecord
    from llenergymeasure.progress import Progress
    from llenergymeasure.state.machine import ExperimentStateMachine

#: Runs one worker in the spawn child (tests pass a fault-injecting one).
WorkerTarget = Callable[[WorkerSpec, Connection], None]
#: Starts the energy session over the given parent CUDA ordinals ([] = no GPU).
StartEnergy = Callable[[list[int]], "EnergySession | None"]
EXIT_GRACE_S = 60.0  # after its last message, how long a worker may take to exit
TERMINATE_GRACE_S = 5.0  # after SIGTERM, before SIGKILL
BARRIER_TIMEOUT_S = 120.0  # joining the gloo group / the start barrier, per worker
START_BARRIER = (
    "torch.distributed gloo barrier (file store), after the parent opened the energy window"
)
#: One loaded worker: no group is formed (process_worker._StartBarrier.join), Go releases it.
SINGLE_START = "none: one worker, released by the parent's Go after it opened the energy window"


@dataclass(frozen=True)
class ProcessPlan:
    """Which GPUs one worker gets: CUDA ordinals in the parent's numbering, their NVML keys
    (``gpu:<index>``) in the worker's ordinal order, and the worker's CUDA_VISIBLE_DEVICES
    (``""``: no GPU; None: inherit)."""

    process_index: int
    parent_ordinals: tuple[int, ...] = ()
    gpu_devices: tuple[str, ...] = ()
    cuda_visible_devices: str | None = None


@dataclass
class LaunchOutcome:
    """What the parent learned: per-process outcomes and its energy report over all GPUs."""

    processes: list[ProcessOutcome]
    energy: EnergyReport | None = None
    energy_not_measured_reason: str | None = None
    start_barrier: str = START_BARRIER

    def launch_record(
        self,
        record: RunRecord,
        state: ExperimentStateMachine,
        *,
        durations_s: dict[str, float],
        setup_s: float,
        timeline: Path | None,
    ) -> LaunchRecord:
        """``raw/launch.json``: the run record, these outcomes and the parent's timings."""
        from llenergymeasure._version import __version__

        core = core_fields(record) | {
            "energy": self.energy,
            "energy_not_measured_reason": self.energy_not_measured_reason,
            "ended_at": state.transitions[-1].at,
        }
        return LaunchRecord(
            **core,
            n_processes=len(self.processes),
            processes=self.processes,
            start_barrier=self.start_barrier,
            llem_version=__version__,
            state=state.state,
            state_transitions=list(state.transitions),
            timeseries_path=timeline.name if timeline and timeline.exists() else None,
            setup_s=setup_s,
            phase_durations_s=durations_s,
        )


# ---- planning (pure) -----------------------------------------------------------------------
def shard_prompts(prompts: Sequence[Prompt], process_index: int, n_processes: int) -> list[Prompt]:
    """Round-robin shard ``process_index`` of ``n_processes``: prompts i, i+N, i+2N, ...

    Deterministic, every prompt in exactly one shard, shard sizes within one of each other
    and (for a dataset whose lengths drift along the file) similar length profiles.
    """
    return list(prompts[process_index::n_processes])


def plan_processes(
    config: ExperimentConfig,
    n_processes: int,
    visible: Sequence[GpuDevice],
    cuda_visible_devices: str | None = None,
) -> list[ProcessPlan]:
    """One plan per worker: GPU i of the candidates (``gpus:``, else all visible) for worker
    i; with ``pytorch.device_map`` the single worker gets all candidates; on CPU none:
    ``device: cpu`` hides CUDA from the workers, no GPU visible to NVML leaves their
    environment as it is (the backend then picks its device as in a single-process run).

    A worker's CUDA_VISIBLE_DEVICES names its GPUs by UUID (the parent's own entry for a
    MIG device), so it runs on exactly the GPU the parent measures whatever the CUDA device
    order. Raises PreflightError when there are fewer GPUs than processes.
    """
    if config.device == "cpu" or not visible:
        hide = "" if config.device == "cpu" else None
        return [ProcessPlan(i, cuda_visible_devices=hide) for i in range(n_processes)]
    candidates = list(config.gpus) if config.gpus else list(range(len(visible)))
    bad = [k for k in candidates if not 0 <= k < len(visible)]
    if bad:
        raise PreflightError([f"gpus {bad} are not visible: {len(visible)} GPU(s) visible"])
    section = config.pytorch
    if section is not None and section.device_map is not None:
        if n_processes != 1:
            raise PreflightError(["pytorch.device_map needs num_processes 1"])
        groups = [candidates]
    elif n_processes > len(candidates):
        raise PreflightError(
            [
                f"pytorch.num_processes is {n_processes} but only {len(candidates)} GPU(s) "
                "are available: each process needs its own GPU"
            ]
        )
    else:
        groups = [[k] for k in candidates[:n_processes]]
    entries = _visible_entries(cuda_visible_devices)
    plans = []
    for i, ordinals in enumerate(groups):
        names = [
            entries[k] if visible[k].mig and entries and k < len(entries) else visible[k].uuid
            for k in ordinals
        ]
        plans.append(
            ProcessPlan(
                i,
                parent_ordinals=tuple(ordinals),
                gpu_devices=tuple(visible[k].key for k in ordinals),
                cuda_visible_devices=",".join(names),
            )
        )
    return plans


def _visible_entries(value: str | None) -> list[str] | None:
    from llenergymeasure.core.energy.nvml import parse_cuda_visible_devices

    return parse_cuda_visible_devices(value)


def charged_devices(
    plan: ProcessPlan, reported: Sequence[int] | None, config: ExperimentConfig
) -> tuple[list[int], list[str]]:
    """(parent ordinals, ``gpu:<index>`` keys) of the GPUs a worker's energy is charged to.

    The GPUs its model occupies (``reported``: worker-local CUDA ordinals, e.g. every GPU of
    a ``device_map``); when it reports none, its assigned GPUs if ``gpus:`` asked for them
    explicitly on a non-CPU run, else none (a CPU worker: an idle GPU is not its energy).
    The same rule as the single-process orchestrator's.
    """
    local = [j for j in (reported or []) if 0 <= j < len(plan.parent_ordinals)]
    if not local and config.device != "cpu" and config.gpus:
        local = list(range(len(plan.parent_ordinals)))
    return [plan.parent_ordinals[j] for j in local], [plan.gpu_devices[j] for j in local]


def worker_config(config: ExperimentConfig, plan: ProcessPlan) -> ExperimentConfig:
    """The config a worker's backend runs: its GPUs are the only ones it sees."""
    if not plan.parent_ordinals:
        return config
    return config.model_copy(update={"gpus": None})


def cpu_threads_per_worker(n_processes: int, on_cpu: bool) -> int | None:
    """Intra-op threads for the workers (None: leave torch's default).

    One worker runs with this process's own setting when it has imported torch, GPU or
    CPU: the direct path would run the model here with it (a caller's
    ``torch.set_num_threads`` reaches the worker too; a spawn child starts with torch's
    default). Several CPU workers split the physical cores between them, unless the user
    set OMP_NUM_THREADS; several GPU workers keep the default."""
    if n_processes <= 1:
        torch = sys.modules.get("torch")
        return int(torch.get_num_threads()) if torch is not None else None
    if not on_cpu or "OMP_NUM_THREADS" in os.environ:
        return None
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, cores // n_processes)


# ---- the parent -----------------------------------------------------------------------------
@dataclass
class _Handle:
    """The parent's view of one worker."""

    plan: ProcessPlan
    process: multiprocessing.process.BaseProcess
    conn: Connection
    stage: str = "starting"
    reached: set[str] = field(default_factory=set)
    device_indices: list[int] | None = None
    failure: Failed | None = None
    eof: bool = False
    exited: bool = False
    stopped: str | None = None
    gpu_devices: list[str] = field(default_factory=list)

    @property
    def index(self) -> int:
        return self.plan.process_index

    @property
    def usable(self) -> bool:
        """Still able to go on: alive, pipe open, no failure."""
        return not (self.eof or self.exited or self.failure is not None or self.stopped)


class Launcher:
    """Runs the workers of one experiment and the parent's energy session around them."""

    def __init__(
        self,
        config: ExperimentConfig,
        record: RunRecord,
        run_dir: Path,
        plans: Sequence[ProcessPlan],
        prompts: Sequence[Prompt],
        *,
        start_energy: StartEnergy,
        stage: Callable[[str, str], None],
        on_measuring: Callable[[], None],
        progress: Progress,
        worker_target: WorkerTarget | None = None,
        verbosity: int | None = None,
    ) -> None:
        self.config = config
        self.record = record
        self.run_dir = Path(run_dir)
        self.plans = list(plans)
        self.prompts = list(prompts)
        self.start_energy = start_energy
        self.stage = stage
        self.on_measuring = on_measuring
        self.progress = progress
        self.worker_target = worker_target or run_process_worker
        if verbosity is None:  # the workers log like this process (the CLI's -v / -q)
            from llenergymeasure.logging import current_verbosity

            verbosity = current_verbosity()
        self.verbosity = verbosity
        self.handles: list[_Handle] = []
        self.rendezvous = raw_dir(self.run_dir) / RENDEZVOUS_FILENAME

    def run(self) -> LaunchOutcome:
        """Start, drive and collect the workers (see the module docstring)."""
        n = len(self.plans)
        raw_dir(self.run_dir).mkdir(parents=True, exist_ok=True)
        outcome = LaunchOutcome(processes=[])
        try:
            self.stage("loading model", "load")
            self.handles = [self._start(plan, n) for plan in self.plans]
            loaded = self._await("loaded", self.handles)
            if not loaded:
                raise ExperimentError(
                    "no worker process loaded the model: " + self._reasons(self.handles)
                )
            if len(loaded) == 1:  # Warmup(0, 1): the worker forms no gloo group
                outcome.start_barrier = SINGLE_START
            outcome.energy, outcome.energy_not_measured_reason = self._measure(loaded)
            done = [h for h in loaded if "done" in h.reached]
            self.stage("computing metrics", "metrics")
            for h in done:
                self._send(h, self._energy_for(h, outcome))
            self._await("written", done)
            self._join(self.handles)
        finally:
            self._stop_all()
            with contextlib.suppress(OSError):
                self.rendezvous.unlink()
        outcome.processes = [self._outcome(h) for h in self.handles]
        return outcome

    # ---- stages -------------------------------------------------------------------------
    def _measure(self, loaded: list[_Handle]) -> tuple[EnergyReport | None, str | None]:
        """Energy session, baseline, warm-up, the window; the parent's report (or why not)."""
        ordinals: set[int] = set()
        for h in loaded:
            used, h.gpu_devices = charged_devices(h.plan, h.device_indices, self.config)
            ordinals.update(used)
        self.stage("idle baseline", "baseline")
        session = self.start_energy(sorted(ordinals))
        report = None
        try:
            if session is not None and self.config.baseline.enabled:
                session.measure_baseline()
            self.stage("warm-up", "warmup")
            for rank, h in enumerate(loaded):
                self._send(h, Warmup(rank, len(loaded)))
            ready = self._await("ready", loaded)
            if not ready:
                return None, "no worker process reached the measurement window"
            self.stage("measuring", "measure")
            total = sum(len(shard_prompts(self.prompts, h.index, len(self.plans))) for h in ready)
            self.progress.prompts_done(0, total)
            self.on_measuring()
            if session is not None:
                session.begin_window("measure")
            for h in ready:
                self._send(h, Go())
            done = self._await("done", ready)
            if session is not None:
                report = session.end_window("measure")
            self.progress.prompts_done(
                sum(len(shard_prompts(self.prompts, h.index, len(self.plans))) for h in done),
                total,
            )
        finally:
            if session is not None:
                session.stop()
        if session is None:
            return None, self.record.energy_not_measured_reason or "no energy session"
        return report, None

    def _energy_for(self, h: _Handle, outcome: LaunchOutcome) -> Energy:
        """The worker's part of the parent's report: its GPUs and the host's devices."""
        if outcome.energy is None:
            reason = outcome.energy_not_measured_reason or "not measured"
            return Energy(None, reason, list(h.gpu_devices))
        return Energy(restrict_energy_report(outcome.energy, h.gpu_devices), None, h.gpu_devices)

    # ---- processes ----------------------------------------------------------------------
    def _start(self, plan: ProcessPlan, n: int) -> _Handle:
        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe(duplex=True)
        on_cpu = not plan.parent_ordinals
        spec = WorkerSpec(
            process_index=plan.process_index,
            n_processes=n,
            config=worker_config(self.config, plan),
            record=self.record,
            prompts=shard_prompts(self.prompts, plan.process_index, n),
            run_dir=self.run_dir,
            rendezvous_path=self.rendezvous,
            parent_pid=os.getpid(),
            cuda_visible_devices=plan.cuda_visible_devices
            if plan.cuda_visible_devices is not None
            else os.environ.get("CUDA_VISIBLE_DEVICES"),
            cpu_threads=cpu_threads_per_worker(n, on_cpu),
            barrier_timeout_s=BARRIER_TIMEOUT_S,
            verbosity=self.verbosity,
        )
        process = ctx.Process(
            target=self.worker_target,
            args=(spec, child_end),
            name=f"llem-worker-{plan.process_index}",
        )
        with _environment(_worker_env(plan)):
            process.start()
        child_end.close()  # only the child's end stays open: its exit wakes wait() with EOF
        return _Handle(plan, process, parent_end)

    def _await(self, goal: str, handles: Sequence[_Handle]) -> list[_Handle]:
        """Block until every handle reached ``goal`` or can no longer; those that did.

        Waits on the pipes and the process sentinels together (no timeout, no polling): a
        message, an exit or a crash wakes it.
        """
        while True:
            pending = [h for h in handles if goal not in h.reached and h.usable]
            if not pending:
                return [h for h in handles if goal in h.reached]
            by_sentinel = {h.process.sentinel: h for h in pending}
            by_pipe = {id(h.conn): h for h in pending if not h.eof}
            objects: list[Connection | int] = [h.conn for h in pending if not h.eof]
            for ready in multiprocessing.connection.wait([*objects, *by_sentinel]):
                if isinstance(ready, int):  # the process exited
                    h = by_sentinel[ready]
                    self._drain(h)  # what it sent before exiting is still in the pipe
                    h.process.join(0)
                    h.exited = True
                else:
                    self._drain(by_pipe[id(ready)])

    def _drain(self, h: _Handle) -> None:
        """Read every message the worker has sent so far."""
        while not h.eof:
            try:
                if not h.conn.poll(0):
                    return
                message = h.conn.recv()
            except (EOFError, OSError):
                h.eof = True
                return
            if isinstance(message, Stage):
                h.stage = message.name
            elif isinstance(message, Loaded):
                h.device_indices = list(message.device_indices)
                h.reached.add("loaded")
            elif isinstance(message, Ready):
                h.reached.add("ready")
            elif isinstance(message, Done):
                h.reached.add("done")
            elif isinstance(message, Written):
                h.reached.add("written")
            elif isinstance(message, Failed):
                h.failure = message
                h.stage = message.stage

    def _send(self, h: _Handle, message: object) -> None:
        try:
            h.conn.send(message)
        except (OSError, ValueError):
            h.eof = True

    def _join(self, handles: Sequence[_Handle]) -> None:
        """Let the workers exit; a worker still running after its last step is stopped."""
        for h in handles:
            if h.usable and "written" not in h.reached:
                h.stopped = "stopped by the launcher: the run went on without it"
                self._send(h, Stop(h.stopped))
        for h in handles:
            h.process.join(EXIT_GRACE_S)

    def _stop_all(self) -> None:
        """Terminate workers still alive (an error or Ctrl-C in the parent), then kill."""
        alive = [h for h in self.handles if h.process.is_alive()]
        for h in alive:
            if not h.stopped and "written" not in h.reached:
                h.stopped = "stopped by the launcher (the launching process stopped)"
            with contextlib.suppress(Exception):
                h.process.terminate()
        for h in alive:
            h.process.join(TERMINATE_GRACE_S)
            if h.process.is_alive():
                h.process.kill()
                h.process.join()
        for h in self.handles:
            with contextlib.suppress(OSError):
                h.conn.close()

    # ---- outcomes -----------------------------------------------------------------------
    def _outcome(self, h: _Handle) -> ProcessOutcome:
        plan = h.plan
        common = {
            "process_index": h.index,
            "stage": h.stage,
            "exit_code": h.process.exitcode,
            "gpu_devices": list(h.gpu_devices or plan.gpu_devices),
            "cuda_visible_devices": plan.cuda_visible_devices,
        }
        if "written" in h.reached:
            return ProcessOutcome(status="completed", **common)
        if h.failure is not None:
            return ProcessOutcome(
                status="failed",
                reason=h.failure.reason,
                detail=h.failure.traceback,
                **common,
            )
        if h.stopped:
            return ProcessOutcome(status="stopped", reason=h.stopped, **common)
        return ProcessOutcome(
            status="crashed",
            reason=f"{describe_exit(h.process.exitcode)} without reporting",
            **common,
        )

    def _reasons(self, handles: Sequence[_Handle]) -> str:
        return "; ".join(
            f"process {o.process_index}: {o.reason} (at {o.stage})"
            for o in (self._outcome(h) for h in handles)
        )


def _worker_env(plan: ProcessPlan) -> dict[str, str]:
    """Environment a worker starts with: its CUDA_VISIBLE_DEVICES; gloo over loopback."""
    env: dict[str, str] = {}
    if plan.cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.cuda_visible_devices
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # one host: the barrier never needs another NIC
    return env


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (a spawn child inherits
    the environment at start)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
