"""One experiment in one fresh subprocess: start it, wait for it, stop it.

Children are forked from a study's fork server (Linux; :func:`start_method`), which has
imported the frameworks once (`study.forkserver_init`), or spawned where there is none or
``LLEM_CHILD_START=spawn`` says so. Either way each experiment runs in a process of its own
(its own CUDA context, memory and exit), with the study's environment as it is when the
experiment starts.

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

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from llenergymeasure.lifeline import ORPHAN_EXIT_CODE, describe_exit, die_with_parent
from llenergymeasure.progress import SAVING_STAGE
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
    save_s: float | None = None  # from its "saving" stage to its report (writing result.json)
    exit_s: float | None = None  # from its report to its exit (teardown)


#: ``LLEM_CHILD_START``: how experiment children start, ``forkserver`` (the default on Linux)
#: or ``spawn`` (a fresh interpreter per experiment that imports everything itself).
CHILD_START_ENV = "LLEM_CHILD_START"
START_METHODS = ("forkserver", "spawn")
#: What a study's fork server imports before it forks any child (`study.forkserver_init`),
#: and, for real experiments, the frameworks (`study.forkserver_frameworks`).
FORKSERVER_PRELOAD = ["llenergymeasure.study.forkserver_init"]
FORKSERVER_FRAMEWORKS = "llenergymeasure.study.forkserver_frameworks"


def start_method() -> str:
    """``forkserver`` where the platform has it (Linux), else ``spawn``; the environment
    variable :data:`CHILD_START_ENV` chooses one of :data:`START_METHODS`."""
    chosen = os.environ.get(CHILD_START_ENV, "").strip().lower()
    if chosen and chosen not in START_METHODS:
        raise ValueError(
            f"{CHILD_START_ENV}={chosen!r}: expected one of {', '.join(START_METHODS)} "
            f"-> unset it, or set {CHILD_START_ENV}=spawn"
        )
    available = multiprocessing.get_all_start_methods()
    if chosen:
        return chosen if chosen in available else "spawn"
    return (
        "forkserver" if sys.platform.startswith("linux") and "forkserver" in available else "spawn"
    )


def child_context(frameworks: bool) -> Any:
    """The multiprocessing context children start from. A fork server is started once per
    study, on its first experiment, with :data:`FORKSERVER_PRELOAD` imported and, when
    ``frameworks``, :data:`FORKSERVER_FRAMEWORKS` (the children do not import them again);
    it forks each child, which then has its own CUDA context and memory exactly as a spawn
    child does. The preload list is read when the server starts (the study's first child)."""
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        preload = FORKSERVER_PRELOAD + ([FORKSERVER_FRAMEWORKS] if frameworks else [])
        ctx.set_forkserver_preload(preload)  # no effect once the server runs
        _ensure_server()
    return ctx


def _ensure_server() -> None:
    """Start the fork server (if it is not running) with this process's ``sys.path`` as its
    ``PYTHONPATH``: the server is a fresh ``python -c`` that would otherwise resolve its
    imports against the environment alone (a relative ``PYTHONPATH`` from another working
    directory, no ``sys.path`` changes made here) and could import llenergymeasure from
    another tree than the one running the study. The environment is restored at once."""
    from multiprocessing import forkserver

    entries = [p or os.getcwd() for p in sys.path]
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in entries)
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def stop_fork_server() -> None:
    """Stop this process's fork server, if one runs (the study runner calls it when a study
    ends, so that no process with the frameworks imported outlives the study; the next
    study starts a fresh server). ``multiprocessing`` has no public call for it: its
    server's own ``_stop`` is used where it exists; elsewhere the server ends with this
    process."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if callable(stop):
        with contextlib.suppress(Exception):
            stop()


def child_main(
    target: WorkerTarget,
    request: WorkerRequest,
    conn: Connection,
    parent_pid: int,
    environ: dict[str, str] | None = None,
) -> None:
    """Entry point of every experiment child: die with the parent, take the study's
    environment as it is now (a fork server's children inherit the server's, from when it
    started), run ``target``, then leave at once (`_leave`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _die_with_study(parent_pid)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    target(request, conn)
    _leave()


def _die_with_study(study_pid: int) -> None:
    """Arm the parent-death signal on this process's parent: the study itself (spawn) or
    the study's fork server, which dies with the study (`study.forkserver_init`). A child
    of a server whose study has already gone exits at once."""
    parent = os.getppid()
    die_with_parent(parent if parent != study_pid else study_pid)
    if parent != study_pid and not _pid_alive(study_pid):
        os._exit(ORPHAN_EXIT_CODE)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leave() -> None:
    """Exit right after the report: the result is written and fsynced, the report sent, the
    experiment's own processes (telemetry sampler, engine workers) stopped. A normal exit
    would then tear the interpreter down module by module (torch, transformers: ~1 s,
    counted as the study's time); the kernel frees the memory and the CUDA context either
    way. Output buffers and log handlers are flushed first."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        logging.shutdown()
    os._exit(0)


def run_child(
    target: WorkerTarget,
    request: WorkerRequest,
    timeout_s: float,
    on_progress: ProgressSink,
    on_start: StartSink | None = None,
    frameworks: bool = True,
) -> Outcome:
    """Run ``target(request, conn)`` in a fresh child (`start_method`); its report, crash or
    timeout.

    ``on_start(pid)`` runs as soon as the child exists. An exception in the parent
    (KeyboardInterrupt, a stop signal, a failed write) stops the child (terminate, then
    kill) and propagates.
    """
    ctx = child_context(frameworks)
    receiver, sender = ctx.Pipe(duplex=False)
    t0 = time.monotonic()
    process = ctx.Process(
        target=child_main,
        args=(
            target,
            dataclasses.replace(request, spawned_s=t0),
            sender,
            os.getpid(),
            dict(os.environ),
        ),
        name=f"llem-experiment-{request.position}",
    )
    process.start()
    sender.close()  # keep only the child's end open, so its exit wakes poll() with EOF
    try:
        if on_start is not None and process.pid is not None:
            on_start(process.pid)
        clock = _StageClock()
        message = _await(receiver, t0 + timeout_s, on_progress, clock)
        if message is _TIMED_OUT:
            _stop(process)
            return _timeout_outcome(timeout_s, time.monotonic() - t0)
        reported = time.monotonic()
        process.join(EXIT_GRACE_S)
        ended = time.monotonic()
        final = message if isinstance(message, (DoneMessage, FailedMessage)) else None
        outcome = _outcome(final, process.exitcode, ended - t0)
        if isinstance(final, DoneMessage):
            outcome.exit_s = ended - reported
            outcome.save_s = reported - clock.saving_s if clock.saving_s is not None else None
        return outcome
    finally:
        _stop(process)
        receiver.close()


@dataclass
class _StageClock:
    """When the child reported it was saving its result (``time.monotonic``)."""

    saving_s: float | None = None


def _await(
    conn: Connection,
    deadline: float,
    on_progress: ProgressSink,
    clock: _StageClock | None = None,
) -> object:
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
            saving = isinstance(message, StageMessage) and message.name == SAVING_STAGE
            if clock is not None and saving:
                clock.saving_s = time.monotonic()
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
