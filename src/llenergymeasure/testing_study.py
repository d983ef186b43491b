"""Fault-injecting study worker targets for tests (picklable under ``spawn``).

(To be merged into ``llenergymeasure.testing`` later.)

Usage::

    target = FaultPlan(raise_on=("batch_size=2",), exit_on=("max_output_tokens=3",)).target()
    StudyRunner(study, results_dir=tmp, worker_target=target).run()

A *match* is either ``dotted.field=value`` (compared with the experiment config's field as
text) or any other text, matched as a substring of the experiment's label. ``cycles``
restricts faults to those cycles. Experiments that match nothing run for real through
`study.worker.experiment_worker`.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from llenergymeasure.study.worker import WorkerRequest, experiment_worker, serve

INJECTED_EXIT_CODE = 3


class InjectedFault(RuntimeError):
    """The error a raising fault throws inside the worker."""


@dataclass(frozen=True)
class FaultPlan:
    """Which experiments fail, and how (see module docstring)."""

    raise_on: tuple[str, ...] = ()
    exit_on: tuple[str, ...] = ()
    hang_on: tuple[str, ...] = ()
    cycles: tuple[int, ...] | None = None
    hang_s: float = 3600.0

    def target(self) -> functools.partial[None]:
        """A worker target (picklable) that applies this plan."""
        return functools.partial(fault_injecting_worker, faults=self)


def fault_injecting_worker(request: WorkerRequest, conn: Connection, faults: FaultPlan) -> None:
    """Exit hard, hang, raise, or run the real worker, as ``faults`` says for ``request``."""
    if faults.cycles is None or request.cycle in faults.cycles:
        if _matches_any(request, faults.exit_on):
            os._exit(INJECTED_EXIT_CODE)  # no message, no cleanup: like an OOM kill
        if _matches_any(request, faults.hang_on):
            time.sleep(faults.hang_s)
        if _matches_any(request, faults.raise_on):
            serve(request, conn, _raise)
            return
    experiment_worker(request, conn)


def _raise(request: WorkerRequest, progress: Any) -> Any:
    """A Measure that fails the way a real experiment might."""
    progress.stage("loading model")
    raise InjectedFault(f"injected failure for {request.label!r} (cycle {request.cycle})")


def _matches_any(request: WorkerRequest, patterns: tuple[str, ...]) -> bool:
    """Whether any pattern matches the request (field=value or label substring)."""
    return any(_matches(request, p) for p in patterns)


def _matches(request: WorkerRequest, pattern: str) -> bool:
    """``dotted.field=value`` against the config, else a substring of the label."""
    if "=" in pattern and " " not in pattern:
        path, _, expected = pattern.partition("=")
        value: Any = request.config.model_dump(mode="json")
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return pattern in request.label
            value = value[part]
        return str(value) == expected
    return pattern in request.label
