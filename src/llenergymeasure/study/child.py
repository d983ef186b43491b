"""One experiment in one fresh ``spawn`` subprocess: start it, wait for it, stop it.

The parent *blocks* on the pipe (``conn.poll(timeout)``) and on ``join(timeout)`` — never a
busy loop: a spinning parent would burn the energy being measured. Only the child's end of
the pipe stays open after start, so the child's exit (even ``os._exit`` or an OOM kill)
wakes ``poll`` with EOF at once. See `study.worker` for the message protocol.

The child never outlives the parent: `child_main` arms the Linux parent-death signal
(`llenergymeasure.lifeline`) before the experiment starts, and the worker checks the parent
again at every progress message. In the child, SIGINT kills at once like SIGTERM and SIGHUP
(no Python handler): stopping is the parent's job, and a child that died of one of those
signals is reported as ``stop_signal`` so the study stops as interrupted instead of
recording a failure (a terminal or a batch scheduler signals the whole job, not one
experiment).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from llenergymeasure.lifeline import describe_exit, die_with_parent
from llenergymeasure.study.signals import STOP_SIGNALS
from llenergymeasure.study.worker import (
    DoneMessage,
    FailedMessage,
    FinalMessage,
    ProgressMessage,
    PromptsMessage,
    ResultSummary,
    StageMessage,
    WorkerRequest,
)

WorkerTarget = Callable[[WorkerRequest, Connection], None]
#: Receives the child's progress messages.
ProgressSink = Callable[[ProgressMessage], None]
#: Told the child's pid as soon as it has started (the runner records it in the manifest).
StartSink = Callable[[int], None]
EXIT_GRACE_S = 60.0  # after reporting, how long a child may take to exit (CUDA teardown)
TERMINATE_GRACE_S = 5.0  # after SIGTERM, before SIGKILL


@dataclass
class Outcome:
    """What one child did."""

    ok: bool
    wall_s: float
    result_path: Path | None = None
    summary: ResultSummary | None = None
    reason: str | None = None  # one line, for failures
    detail: str | None = None  # traceback text or explanation, for failures
    stop_signal: int | None = None  # the child died of SIGINT/SIGTERM/SIGHUP: stop the study


def child_main(
    target: WorkerTarget, request: WorkerRequest, conn: Connection, parent_pid: int
) -> None:
    """Entry point of every experiment child: die with the parent, then run ``target``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent(parent_pid)
    target(request, conn)


def run_child(
    target: WorkerTarget,
    request: WorkerRequest,
    timeout_s: float,
    on_progress: ProgressSink,
    on_start: StartSink | None = None,
) -> Outcome:
    """Run ``target(request, conn)`` in a spawn child; its report, crash or timeout.

    ``on_start(pid)`` runs as soon as the child exists. An exception in the parent
    (KeyboardInterrupt, a stop signal, a failed write) stops the child (terminate, then
    kill) and propagates.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=child_main,
        args=(target, request, sender, os.getpid()),
        name=f"llem-experiment-{request.position}",
    )
    t0 = time.monotonic()
    process.start()
    sender.close()  # keep only the child's end open, so its exit wakes poll() with EOF
    try:
        if on_start is not None and process.pid is not None:
            on_start(process.pid)
        message = _await(receiver, t0 + timeout_s, on_progress)
        if message is _TIMED_OUT:
            _stop(process)
            return _timeout_outcome(timeout_s, time.monotonic() - t0)
        process.join(EXIT_GRACE_S)
        final = message if isinstance(message, (DoneMessage, FailedMessage)) else None
        return _outcome(final, process.exitcode, time.monotonic() - t0)
    finally:
        _stop(process)
        receiver.close()


def _await(conn: Connection, deadline: float, on_progress: ProgressSink) -> object:
    """Block until the child's final message, its exit (None) or the deadline."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not conn.poll(remaining):
            return _TIMED_OUT
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return None  # the child exited without reporting
        if isinstance(message, (StageMessage, PromptsMessage)):
            on_progress(message)
            continue
        return message


_TIMED_OUT = object()


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    """Terminate a child that is still alive, then kill it if it ignores SIGTERM."""
    if process.exitcode is not None or process.pid is None:
        return
    if process.is_alive():
        process.terminate()
        process.join(TERMINATE_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()


def _outcome(message: FinalMessage | None, exitcode: int | None, wall_s: float) -> Outcome:
    """Interpret the child's final message (or its absence) and exit code."""
    if isinstance(message, DoneMessage):
        path = Path(message.result_path)
        return Outcome(ok=True, wall_s=wall_s, result_path=path, summary=message.summary)
    if isinstance(message, FailedMessage):
        return Outcome(ok=False, wall_s=wall_s, reason=message.reason, detail=message.traceback)
    reason = describe_exit(exitcode)
    if exitcode is not None and -exitcode in STOP_SIGNALS:
        detail = f"The experiment process was {reason}: the study is being stopped."
        return Outcome(False, wall_s, reason=reason, detail=detail, stop_signal=-exitcode)
    detail = (
        f"The experiment process {reason} without reporting a result or an error.\n"
        "Likely causes: out of memory (killed by the kernel), a crash in native code, "
        "or os._exit. Check the system log (dmesg) and the run directory, if any."
    )
    return Outcome(ok=False, wall_s=wall_s, reason=reason, detail=detail)


def _timeout_outcome(timeout_s: float, wall_s: float) -> Outcome:
    """A child stopped for running past the per-experiment timeout."""
    reason = f"timed out after {timeout_s:g} s"
    detail = (
        f"The experiment did not finish within execution.experiment_timeout_seconds="
        f"{timeout_s:g} (this covers start-up, model load, warm-up and measurement); "
        "it was terminated. Raise the timeout if the experiment is legitimately this long."
    )
    return Outcome(ok=False, wall_s=wall_s, reason=reason, detail=detail)
