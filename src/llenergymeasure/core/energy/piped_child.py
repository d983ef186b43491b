"""The parent side of the energy layer's helper processes (the telemetry sampler, the counter
tracer): a ``spawn`` child on a pipe, launched without waiting so that its interpreter start
(about a second) overlaps the caller's work, and waited for once, at its first use, until it
says it is ready (or sends the traceback of why it is not)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from llenergymeasure.exceptions import MeterError


class PipedChild:
    """A spawned helper process and the pipe to it; subclasses say what it runs."""

    #: Names the process in messages ("Telemetry sampler", "Counter tracer").
    label = "Helper process"
    process_name = "llem-helper"

    def __init__(self, start_timeout_s: float, reply_timeout_s: float) -> None:
        self.start_timeout_s = start_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._conn: Connection | None = None
        self._process: Any = None
        self._ready = False  # the child has said it is ready (wait_started)

    def _child(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """The child's entry point and its arguments (the pipe's end is appended)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True while the child process is up."""
        return self._process is not None and self._process.is_alive()

    @property
    def ready(self) -> bool:
        """Whether the launched child has said it is ready (``wait_started``)."""
        return self._ready

    def start(self) -> None:
        """Start the child and wait (blocking, not spinning) until it is ready."""
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        """Start the child without waiting for it; :meth:`wait_started` waits."""
        if self.running:
            return
        self._ready = False
        target, args = self._child()
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(
            target=target, args=(*args, child_conn), daemon=True, name=self.process_name
        )
        self._process.start()
        child_conn.close()
        self._conn = parent_conn

    def wait_started(self) -> None:
        """Wait (once) until the launched child is ready; MeterError if it could not start.
        A no-op when nothing was launched (the next request says it is not running)."""
        if self._ready or self._conn is None:
            return
        kind, payload = self._receive(self.start_timeout_s, "start")
        if kind == "error":
            self._reap()
            raise MeterError(f"{self.label} could not start:\n{payload}")
        self._ready = True

    def _receive(self, timeout_s: float, what: str) -> tuple[str, Any]:
        """Wait for one message from the child."""
        assert self._conn is not None
        try:
            if self._conn.poll(timeout_s):
                msg: tuple[str, Any] = self._conn.recv()
                return msg
        except (EOFError, OSError) as e:
            self._reap()
            raise MeterError(f"{self.label} died during {what}; see stderr.") from e
        self._reap()
        raise MeterError(f"{self.label} did not answer {what} within {timeout_s:.0f} s.")

    def _reap(self) -> None:
        """Join or terminate the child; close the pipe."""
        if self._process is not None:
            self._process.join(timeout=5.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5.0)
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._ready = False
