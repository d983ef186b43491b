"""Experiment state machine: INITIALISING -> MEASURING -> DONE (with a ``failed`` flag).

Three states only (v2.0 design): warm-up belongs to INITIALISING, aggregation and saving to
DONE. A failure at any point goes straight to DONE with ``failed=True``. Every transition is
time-stamped (UTC) so a result records when its measurement window opened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict

from llenergymeasure.clock import utc_now
from llenergymeasure.exceptions import ExperimentError


class ExperimentState(str, Enum):
    """Where one experiment is in its life."""

    INITIALISING = "initialising"  # pre-flight, model load, tokenise, warm-up, baseline
    MEASURING = "measuring"  # the measurement window is open
    DONE = "done"  # finished, successfully or not (see ``failed``)


_ALLOWED: dict[ExperimentState, frozenset[ExperimentState]] = {
    ExperimentState.INITIALISING: frozenset({ExperimentState.MEASURING, ExperimentState.DONE}),
    ExperimentState.MEASURING: frozenset({ExperimentState.DONE}),
    ExperimentState.DONE: frozenset(),
}


class InvalidTransitionError(ExperimentError):
    """A transition the state machine does not allow (a programming error)."""


class StateTransition(BaseModel):
    """One entry into a state, with its UTC time."""

    model_config = ConfigDict(extra="forbid")

    state: ExperimentState
    at: datetime
    failed: bool = False


class ExperimentStateMachine:
    """Validated transitions for one experiment; starts in INITIALISING."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        self.failed = False
        self.error: str | None = None
        self.transitions: list[StateTransition] = [
            StateTransition(state=ExperimentState.INITIALISING, at=clock())
        ]

    @property
    def state(self) -> ExperimentState:
        """The current state."""
        return self.transitions[-1].state

    @property
    def started_at(self) -> datetime:
        """When the experiment entered INITIALISING."""
        return self.transitions[0].at

    def entered(self, state: ExperimentState) -> datetime | None:
        """When ``state`` was entered, or None if it never was."""
        return next((t.at for t in self.transitions if t.state == state), None)

    def transition(self, new: ExperimentState) -> None:
        """Move to ``new``; raises InvalidTransitionError if the move is not allowed."""
        if new not in _ALLOWED[self.state]:
            raise InvalidTransitionError(
                f"cannot go from {self.state.value} to {new.value}: allowed "
                f"{sorted(s.value for s in _ALLOWED[self.state]) or 'nothing (terminal)'}"
            )
        self.transitions.append(StateTransition(state=new, at=self._clock(), failed=self.failed))

    def start_measuring(self) -> None:
        """INITIALISING -> MEASURING (the window opens)."""
        self.transition(ExperimentState.MEASURING)

    def finish(self, *, failed: bool = False, error: str | None = None) -> None:
        """-> DONE; ``failed`` marks a run that did not complete, ``error`` says why."""
        self.failed = failed
        self.error = error
        self.transition(ExperimentState.DONE)
