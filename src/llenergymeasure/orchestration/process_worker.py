"""One worker process of a launched run (``orchestration/launcher.py`` starts it: ``spawn``).

The worker runs the backend on its shard of the prompts and measures its own window; it
never opens an energy meter (the parent owns the only NVML session). Protocol on its pipe,
every message a small frozen dataclass; the worker blocks on the pipe between steps::

    worker -> parent   Stage(name) ...  Loaded(device_indices)
    parent -> worker   Warmup(rank, size)        join the start-barrier group, warm up
    worker -> parent   Ready()
    parent -> worker   Go()                      (the parent has opened the energy window)
    worker -> parent   Done(n_requests)          barrier (size > 1), window, inference, closed
    parent -> worker   Energy(report, reason, gpu_devices)   its devices' part of the energy
    worker -> parent   Written(path)             raw/process_<i>.json + .done are on disk

``Stop(reason)`` from the parent at any step ends the worker without a result; ``Failed``
from the worker reports an exception (then it exits with code 1). A parent that disappears
(EOF on the pipe) ends the worker too.

The start barrier is a ``torch.distributed`` gloo group (CPU and GPU alike: a barrier needs
no NCCL communicator on the GPUs) over a file store in the run directory. Its failure never
fails the worker: it starts unsynchronised, with a flag, and the aggregation's overlap check
says how far apart the windows were. A group of one worker is never formed: Go alone
releases it, so that worker warms up (compiles) and measures with ``torch.distributed`` not
initialised, like the single-process (direct) path, and the parent's energy window holds no
barrier either.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.clock import utc_now
from llenergymeasure.domain.energy import EnergyReport, QualityFlag
from llenergymeasure.lifeline import die_with_parent
from llenergymeasure.orchestration.assemble import (
    RunRecord,
    Window,
    backend_flags,
    memory_metrics,
    raw_result,
)

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.backends.protocol import InferenceBackend, PreparedBatches
    from llenergymeasure.datasets.types import Prompt


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker needs (pickled by ``spawn``).

    ``config`` is what the backend runs (``gpus`` cleared when the worker sees only its own
    GPUs); ``record`` carries the run's identity and the parent's effective config, which go
    into the raw result unchanged.
    """

    process_index: int
    n_processes: int
    config: ExperimentConfig
    record: RunRecord
    prompts: list[Prompt]
    run_dir: Path
    rendezvous_path: Path
    parent_pid: int
    cuda_visible_devices: str | None = None
    cpu_threads: int | None = None
    barrier_timeout_s: float = 120.0
    verbosity: int | None = None


# ---- messages ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """The worker began a stage (for the parent's record of where a worker stopped)."""

    name: str


@dataclass(frozen=True)
class Loaded:
    """Model loaded and prompts tokenised; the CUDA ordinals (worker-local) it occupies."""

    device_indices: list[int]


@dataclass(frozen=True)
class Ready:
    """Warmed up; waiting for Go."""


@dataclass(frozen=True)
class Done:
    """The window is closed (inference finished)."""

    n_requests: int


@dataclass(frozen=True)
class Written:
    """The raw result and its completion marker are on disk."""

    path: str


@dataclass(frozen=True)
class Failed:
    """The worker raised at ``stage``: a one-line reason and the traceback text."""

    stage: str
    reason: str
    traceback: str


@dataclass(frozen=True)
class Warmup:
    """Join the start-barrier group as ``rank`` of ``size``, then warm up."""

    rank: int
    size: int


@dataclass(frozen=True)
class Go:
    """Start measuring (after the barrier)."""


@dataclass(frozen=True)
class Energy:
    """This worker's part of the parent's energy report (None: not measured, ``reason``)
    and the GPUs it is charged with (``gpu:<nvml index>``)."""

    report: EnergyReport | None
    reason: str | None = None
    gpu_devices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stop:
    """End without a result."""

    reason: str


WorkerMessage = Stage | Loaded | Ready | Done | Written | Failed
ParentMessage = Warmup | Go | Energy | Stop


class _Stopped(Exception):
    """The parent said Stop, or went away."""


# ---- the worker -------------------------------------------------------------------------
def run_process_worker(spec: WorkerSpec, conn: Connection) -> None:
    """Spawn target: serve the protocol above; exit code 0 on success or Stop, 1 on error."""
    code = _Worker(spec, conn).serve()
    with contextlib.suppress(OSError):
        conn.close()
    if code:
        sys.exit(code)


class _Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.stage = "starting"
        self.backend: InferenceBackend | None = None
        self.record = spec.record
        self.barrier = _StartBarrier(spec)

    def serve(self) -> int:
        try:
            self._configure()
            self._run()
            return 0
        except _Stopped:
            return 0
        except BaseException as e:  # KeyboardInterrupt and SystemExit too: say why
            self._send(Failed(self.stage, _one_line(e), traceback.format_exc()))
            return 1
        finally:
            self.barrier.close()
            if self.backend is not None:
                with contextlib.suppress(Exception):
                    self.backend.cleanup()

    def _run(self) -> None:
        from llenergymeasure.core.backends.registry import get_backend

        spec, config = self.spec, self.spec.config
        self._enter("loading model")
        backend = self.backend = get_backend(config.backend)
        backend.initialize(config, spec.prompts)
        self._enter("tokenising")
        prepared = backend.tokenize(spec.prompts)
        self._record_prepared(prepared)
        self._send(Loaded(backend.device_indices()))
        warmup = self._expect(Warmup)
        self._enter("joining the start barrier")
        self.barrier.join(warmup.rank, warmup.size)
        self._enter("warm-up")
        from llenergymeasure.orchestration.warmup import run_warmup

        self.record.warmup = run_warmup(lambda: backend.warmup_step(prepared), config.warmup)
        self._send(Ready())
        self._expect(Go)
        self._enter("measuring")
        self.barrier.wait()
        window = Window()
        backend.synchronize()
        window.begin()
        output = backend.run_inference(prepared)
        backend.synchronize()
        window.end()
        self._send(Done(output.n_requests))
        output.finalize()  # what the backend derives from its stamps, after the window
        self.barrier.close()
        self.record.warnings += self.barrier.flags + backend_flags(output.warnings)
        energy = self._expect(Energy)
        self._enter("writing the raw result")
        from llenergymeasure.results.aggregation import resolve_arch_quietly
        from llenergymeasure.results.persistence import write_process_result

        self.record.energy = energy.report
        self.record.energy_not_measured_reason = energy.reason
        memory = memory_metrics(config, resolve_arch_quietly(config.model), prepared, output)
        raw = raw_result(
            self.record,
            output,
            window,
            memory,
            utc_now(),
            process_index=spec.process_index,
            n_processes=spec.n_processes,
            gpu_devices=energy.gpu_devices,
            cuda_visible_devices=spec.cuda_visible_devices,
        )
        path = write_process_result(raw, spec.run_dir)
        self._send(Written(str(path)))

    # ---- helpers ------------------------------------------------------------------------
    def _configure(self) -> None:
        """Logging, CPU threads, and dying with the parent."""
        if self.spec.verbosity is not None:
            from llenergymeasure.logging import setup_logging

            setup_logging(self.spec.verbosity)
        die_with_parent(self.spec.parent_pid, signal.SIGTERM)  # SIGTERM: it may clean up
        if self.spec.cpu_threads is not None:
            import torch

            torch.set_num_threads(self.spec.cpu_threads)

    def _record_prepared(self, prepared: PreparedBatches) -> None:
        self.record.warnings += backend_flags(prepared.notes)
        if prepared.truncated_requests:
            self.record.warnings.append(
                QualityFlag(
                    code="prompts_truncated",
                    message=f"process {self.spec.process_index}: "
                    f"{prepared.truncated_requests} prompt(s) were truncated to max_input_tokens",
                )
            )

    def _enter(self, stage: str) -> None:
        self.stage = stage
        self._send(Stage(stage))

    def _send(self, message: WorkerMessage) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(message)

    def _expect(self, kind: type[Any]) -> Any:
        """Block for the parent's next message; Stop or EOF end the worker."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError) as e:
            raise _Stopped("the launching process went away") from e
        if isinstance(message, Stop):
            raise _Stopped(message.reason)
        if not isinstance(message, kind):
            raise RuntimeError(f"expected {kind.__name__} from the parent, got {message!r}")
        return message


class _StartBarrier:
    """The gloo group of the ready workers, used once as a start barrier."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.joined = False
        self.flags: list[QualityFlag] = []

    def join(self, rank: int, size: int) -> None:
        """Join the group (the parent gives the ranks); on failure, go on without it.

        A group of one is not formed: there is nobody to wait for (Go is the release), and
        an initialised ``torch.distributed`` (its gloo threads, transformers asking it for
        the world size in every ``generate``, dynamo compiling under it) would make the one
        worker run differently from the direct path it is compared with."""
        if size <= 1:
            return
        try:
            import torch.distributed as dist

            dist.init_process_group(
                "gloo",
                init_method=self.spec.rendezvous_path.resolve().as_uri(),
                rank=rank,
                world_size=size,
                timeout=timedelta(seconds=self.spec.barrier_timeout_s),
            )
            self.joined = True
        except Exception as e:
            self._note(f"could not join the start barrier ({_one_line(e)})")

    def wait(self) -> None:
        """Block until every worker of the group got here."""
        if not self.joined:
            return
        try:
            import torch.distributed as dist

            dist.barrier()
        except Exception as e:
            self._note(f"start barrier failed ({_one_line(e)})")

    def close(self) -> None:
        if not self.joined:
            return
        self.joined = False
        with contextlib.suppress(Exception):
            import torch.distributed as dist

            dist.destroy_process_group()

    def _note(self, what: str) -> None:
        self.flags.append(
            QualityFlag(
                code="start_barrier",
                message=f"process {self.spec.process_index}: {what}; it started without "
                "waiting for the others",
            )
        )


def _one_line(error: BaseException) -> str:
    """``Type: first line of message``, at most 300 characters."""
    text = str(error).strip().splitlines()
    head = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return head[:300]
