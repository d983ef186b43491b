"""Stop signals: SIGINT, SIGTERM and SIGHUP stop a study the same way.

Slurm (at the time limit, then SIGKILL after its grace period), Kubernetes and systemd
stop jobs with SIGTERM; a closed terminal sends SIGHUP; Ctrl-C sends SIGINT. While a study
runs, :class:`StopSignals` turns each into an exception in the main thread — SIGINT into
the usual ``KeyboardInterrupt``, SIGTERM and SIGHUP into :class:`Interrupted` (a
``KeyboardInterrupt`` too, so every ``except KeyboardInterrupt`` clean-up path runs). The
runner then stops the running child (terminate, then kill), marks the study
``interrupted``, writes the summary of what finished and raises ``Interrupted(signum)``
with the study directory attached; the CLI exits ``128 + signum`` (130, 143, 129) with
one line saying how to resume.

Two rules make that safe:

* **Critical sections** (`StopSignals.critical`): a signal that arrives while the runner
  records an outcome and rewrites the manifest is held until the section ends, so the
  in-memory manifest is never half-updated when the clean-up writes it.
* **One stop**: once a stop began, further stop signals are ignored (counted), so a
  second Ctrl-C or Slurm's repeated SIGTERM cannot abort the clean-up. SIGKILL still works.

Inside a Slurm job SIGUSR1 stops the study the same way, and the runner then requeues its
job (`study.allocation`: the whole study in one allocation, ``--signal=B:USR1@<s>``).

Handlers are installed only from the main thread (Python's rule) and the previous ones are
restored on exit, so embedding applications get theirs back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a study here: SIGINT, SIGTERM, SIGHUP, and inside a Slurm job
    also SIGUSR1, "time is nearly up: stop and requeue" (`study.allocation`)."""
    from llenergymeasure.study.allocation import REQUEUE_SIGNAL, slurm_job_id

    extra = (REQUEUE_SIGNAL,) if slurm_job_id() else ()
    return (*STOP_SIGNALS, *extra)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15 (``signal N`` when unknown)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """A study (or experiment) stopped by a signal; ``exit_code`` is ``128 + signum``.

    ``study_dir`` is set by the runner once the study is marked interrupted and its
    summary written (None before that, or for a single experiment); ``result`` is the
    StudyResult of what finished, when there is one.
    """

    def __init__(self, signum: int, study_dir: Path | None = None, result: Any = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.study_dir = study_dir
        self.result = result
        self.resume_hint: str | None = None  # the command that resumes (set by the CLI)

    @property
    def exit_code(self) -> int:
        """The shell convention for death by this signal."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {signal_name(self.signum)}"


def signal_of(error: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (a bare one is SIGINT)."""
    return error.signum if isinstance(error, Interrupted) else int(signal.SIGINT)


class StopSignals:
    """Install the stop-signal handlers for a ``with`` block (see the module docstring)."""

    def __init__(self) -> None:
        self.stopping = False
        self.received: list[int] = []  # every stop signal seen, in order
        self._defer = 0
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    # ---- installation -------------------------------------------------------------------
    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in stop_signals():
                with contextlib.suppress(OSError, ValueError):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    # ---- the handler --------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Raise the stop (or hold it inside a critical section; ignore it once stopping)."""
        self.received.append(signum)
        if self.stopping:
            return
        if self._defer:
            if self._pending is None:
                self._pending = signum
            return
        self.raise_stop(signum)

    def raise_stop(self, signum: int) -> None:
        """Begin the stop: KeyboardInterrupt for SIGINT, else Interrupted(signum)."""
        self.stopping = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Hold stop signals until the block ends (then raise the first one held)."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        if not self._defer and self._pending is not None and not self.stopping:
            signum, self._pending = self._pending, None
            self.raise_stop(signum)
