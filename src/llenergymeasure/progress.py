"""Progress reporting seam between the library and the CLI.

The library never prints progress itself: it calls a `Progress` object. The CLI passes one
that draws bars on stderr; library users get `NullProgress` unless they pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: The stage an experiment reports right before it writes its result: a study times the
#: saving from it (the child's report follows the write).
SAVING_STAGE = "saving"


@dataclass(frozen=True)
class ExperimentTick:
    """Where a study is: experiment `index` (1-based) of `total`."""

    index: int
    total: int
    cycle: int
    n_cycles: int
    label: str
    eta_s: float | None = None


class Progress(Protocol):
    """Callbacks the library makes while it works. All must be cheap and never raise."""

    def stage(self, name: str) -> None:
        """A new stage of one experiment began (e.g. 'loading model', 'warm-up', 'measuring')."""

    def prompts_done(self, done: int, total: int) -> None:
        """Measured prompts completed so far in the current experiment."""

    def experiment_started(self, tick: ExperimentTick) -> None:
        """A study began an experiment."""

    def experiment_finished(self, tick: ExperimentTick, status: str, detail: str = "") -> None:
        """A study finished an experiment (status: completed | failed | skipped)."""

    def message(self, text: str) -> None:
        """A short informational line (e.g. 'waiting 60 s between configs')."""


class NullProgress:
    """Progress that shows nothing."""

    def stage(self, name: str) -> None:
        """Ignore."""

    def prompts_done(self, done: int, total: int) -> None:
        """Ignore."""

    def experiment_started(self, tick: ExperimentTick) -> None:
        """Ignore."""

    def experiment_finished(self, tick: ExperimentTick, status: str, detail: str = "") -> None:
        """Ignore."""

    def message(self, text: str) -> None:
        """Ignore."""
