"""The child side of a study experiment: runs in a fresh ``spawn`` subprocess.

Protocol on the (one-way, child -> parent) pipe, every message a small frozen dataclass:

    StageMessage(name)                   forwarded to the parent's Progress.stage
    PromptsMessage(done, total)          forwarded to Progress.prompts_done
    DoneMessage(result_path, summary)    the experiment finished; summary: `ResultSummary`
    FailedMessage(reason, traceback)     it raised; the parent records the traceback

Every message is also a safe point: a child whose parent has gone exits there at once
(`lifeline.exit_if_orphaned`), in case the parent-death signal is not available.

A child that exits without sending "ok" or "error" crashed (os._exit, OOM kill, segfault):
the parent reads the exit code. KeyboardInterrupt propagates (the parent is stopping the
study); every other BaseException, SystemExit included, is reported as an error.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.lifeline import exit_if_orphaned

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.progress import ExperimentTick

logger = logging.getLogger(__name__)

#: Runs one experiment in the child: (request, progress) -> (result, result.json path).
Measure = Callable[["WorkerRequest", Any], "tuple[ExperimentResult, Path]"]


@dataclass(frozen=True)
class WorkerRequest:
    """What the parent sends a child (pickled by ``spawn``)."""

    config: ExperimentConfig
    provenance: dict[str, str] = field(default_factory=dict)
    results_dir: Path = Path(".")
    position: int = 0
    cycle: int = 1
    label: str = ""
    verbosity: int | None = None  # None: leave logging alone (library use)
    #: The run directory the parent made (and recorded in the manifest) for this attempt;
    #: None: the orchestrator makes one under ``results_dir``.
    run_dir: Path | None = None
    #: When the parent asked for the child process (``time.monotonic``; set by
    #: `study.child.run_child`): the child records the time up to its first stage as the
    #: phase ``start`` (interpreter start, imports).
    spawned_s: float | None = None
    #: The study's cache directory (``<study dir>/cache``): what its experiments build once
    #: and share (synthetic prompts, vLLM's compile cache). None: nothing is shared.
    cache_dir: Path | None = None


@dataclass(frozen=True)
class StageMessage:
    """A new stage of the experiment began."""

    name: str


@dataclass(frozen=True)
class PromptsMessage:
    """Measured prompts completed so far."""

    done: int
    total: int


@dataclass(frozen=True)
class ResultSummary:
    """The few numbers the parent records in the manifest without reading result.json."""

    config_hash: str
    measurement_s: float | None
    failed: bool
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class DoneMessage:
    """The experiment finished and wrote ``result_path`` (absolute)."""

    result_path: str
    summary: ResultSummary


@dataclass(frozen=True)
class FailedMessage:
    """The experiment raised: a one-line reason and the traceback text."""

    reason: str
    traceback: str


ProgressMessage = StageMessage | PromptsMessage
FinalMessage = DoneMessage | FailedMessage


class PipeProgress:
    """A Progress that forwards per-experiment callbacks to the parent; never raises."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _send(self, message: ProgressMessage) -> None:
        exit_if_orphaned()  # a safe point: an orphan must not go on measuring
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(message)

    def stage(self, name: str) -> None:
        """Forward a stage change."""
        self._send(StageMessage(name))

    def prompts_done(self, done: int, total: int) -> None:
        """Forward prompt progress."""
        self._send(PromptsMessage(done, total))

    def experiment_started(self, tick: ExperimentTick) -> None:
        """Not used inside one experiment."""

    def experiment_finished(self, tick: ExperimentTick, status: str, detail: str = "") -> None:
        """Not used inside one experiment."""

    def message(self, text: str) -> None:
        """Not forwarded (the parent reports study-level messages)."""


def result_summary(result: ExperimentResult) -> ResultSummary:
    """The summary the parent records in the manifest for ``result``."""
    from llenergymeasure.domain.study import STUDY_METRICS

    return ResultSummary(
        config_hash=result.config_hash,
        measurement_s=result.measurement_window_s,
        failed=result.failed,
        metrics={name: getattr(result, name) for name in STUDY_METRICS},
    )


def run_real_experiment(request: WorkerRequest, progress: Any) -> tuple[ExperimentResult, Path]:
    """Measure through the orchestrator (the default `Measure`)."""
    from llenergymeasure.orchestration.orchestrator import run_single_experiment

    return run_single_experiment(
        request.config,
        request.provenance,
        request.results_dir,
        progress=progress,
        run_dir=request.run_dir,
        process_started_s=request.spawned_s,
        cache_dir=request.cache_dir,
        process_exits=True,  # the child leaves once it has reported (`study.child`)
    )


def serve(request: WorkerRequest, conn: Connection, measure: Measure) -> None:
    """Run ``measure`` and report its outcome on ``conn`` (see module docstring)."""
    try:
        if request.verbosity is not None:
            from llenergymeasure.logging import setup_logging

            setup_logging(request.verbosity)
        result, path = measure(request, PipeProgress(conn))
        message: FinalMessage = DoneMessage(str(Path(path).resolve()), result_summary(result))
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: the parent must learn why
        message = FailedMessage(_one_line(e), traceback.format_exc())
    try:
        conn.send(message)
    except (OSError, ValueError):
        logger.warning("could not report to the study process (it has gone away)")
    finally:
        conn.close()


def experiment_worker(request: WorkerRequest, conn: Connection) -> None:
    """Default child target: measure one experiment and report through ``conn``."""
    serve(request, conn, run_real_experiment)


def _one_line(error: BaseException) -> str:
    """``Type: first line of message``, at most 300 characters."""
    text = str(error).strip().splitlines()
    head = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return head[:300]
