"""Child processes that never outlive their parent (bottom layer: the study and core use it).

A study's experiment child, and the telemetry sampler that child starts, must die with the
process that started them: an orphan keeps measuring, writes a result nobody records and,
on a resume, shares the GPU with the experiment that replaces it. Two mechanisms:

* :func:`die_with_parent` — on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel
  to kill this process the moment its parent exits, however the parent dies (SIGKILL
  included). The call only covers a parent that is still alive when it is made, so it is
  followed by a check that the parent is still the expected one (the race: the parent died
  between ``fork`` and ``prctl``, and we were re-parented). Elsewhere it does nothing and
  returns False.
* :func:`exit_if_orphaned` — the same check, for safe points (between stages): the
  fallback where there is no parent-death signal, and a second line of defence where there
  is. An orphan exits at once with :data:`ORPHAN_EXIT_CODE`, writing nothing.

Caveat (Linux): the parent-death signal fires when the *thread* that started the child
exits, not only the process. Start children from a thread that lives as long as they
should (the study runner and the orchestrator start them from the main thread).

Usage, first thing in a ``spawn`` child::

    die_with_parent()            # the parent is multiprocessing.parent_process()
    ...
    exit_if_orphaned()           # at a safe point
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: Exit status of a child that found its parent gone (nobody is left to read it).
ORPHAN_EXIT_CODE = 111

_expected_parent: int | None = None


def expected_parent_pid() -> int | None:
    """The pid this process must keep as its parent: the one given to
    :func:`die_with_parent`, else the ``multiprocessing`` parent, else None."""
    if _expected_parent is not None:
        return _expected_parent
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux), then exit
    at once if the parent is already gone. ``parent_pid`` defaults to the multiprocessing
    parent. Returns True when the parent-death signal is set."""
    global _expected_parent
    if parent_pid is None:
        parent_pid = expected_parent_pid()
    _expected_parent = parent_pid
    armed = _set_pdeathsig(sig)
    exit_if_orphaned()
    return armed


def parent_alive(parent_pid: int | None = None) -> bool:
    """Whether this process is still the child of ``parent_pid`` (default: the expected
    parent; True when there is none to check)."""
    pid = parent_pid if parent_pid is not None else expected_parent_pid()
    return pid is None or os.getppid() == pid


def exit_if_orphaned() -> None:
    """Exit now (``os._exit``, no clean-up, nothing written) when the parent has gone."""
    if not parent_alive():
        os._exit(ORPHAN_EXIT_CODE)


def _set_pdeathsig(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` through libc; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def describe_exit(exitcode: int | None) -> str:
    """How a child process ended: ``exited with code N`` or ``killed by signal SIGKILL (9)``
    (``did not exit`` while it runs)."""
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "signal"
        return f"killed by signal {name} ({-exitcode})"
    return f"exited with code {exitcode}"
