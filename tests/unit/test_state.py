"""The 3-state experiment state machine."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from llenergymeasure.state.machine import (
    ExperimentState,
    ExperimentStateMachine,
    InvalidTransitionError,
)


class _Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def test_happy_path_records_each_transition_time() -> None:
    sm = ExperimentStateMachine(clock=_Clock())
    assert sm.state is ExperimentState.INITIALISING
    sm.start_measuring()
    sm.finish()
    assert [t.state for t in sm.transitions] == [
        ExperimentState.INITIALISING,
        ExperimentState.MEASURING,
        ExperimentState.DONE,
    ]
    times = [t.at for t in sm.transitions]
    assert times == sorted(times) and len(set(times)) == 3
    assert sm.entered(ExperimentState.MEASURING) == times[1]
    assert not sm.failed


def test_failure_before_measuring_goes_straight_to_done() -> None:
    sm = ExperimentStateMachine()
    sm.finish(failed=True, error="Traceback ...")
    assert sm.state is ExperimentState.DONE and sm.failed and sm.error == "Traceback ..."
    assert sm.transitions[-1].failed
    assert sm.entered(ExperimentState.MEASURING) is None


@pytest.mark.parametrize(
    "moves",
    [
        [ExperimentState.INITIALISING],  # no self-loop
        [ExperimentState.MEASURING, ExperimentState.INITIALISING],  # no going back
        [ExperimentState.MEASURING, ExperimentState.MEASURING],
        [ExperimentState.DONE, ExperimentState.MEASURING],  # DONE is terminal
    ],
)
def test_invalid_transitions_raise(moves: list[ExperimentState]) -> None:
    sm = ExperimentStateMachine()
    with pytest.raises(InvalidTransitionError):
        for state in moves:
            sm.transition(state)


def test_state_values_are_stable_strings() -> None:
    assert [s.value for s in ExperimentState] == ["initialising", "measuring", "done"]
