"""Thermal-recovery gaps: config gaps within a cycle, cycle gaps between cycles, --no-gaps."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import tiny_study

from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FaultPlan

pytestmark = pytest.mark.slow


class _Messages:
    """A Progress that keeps the study-level messages and finished ticks."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.finished: list[tuple[int, int, str]] = []

    def stage(self, name: str) -> None:
        """Ignore."""

    def prompts_done(self, done: int, total: int) -> None:
        """Ignore."""

    def experiment_started(self, tick) -> None:  # type: ignore[no-untyped-def]
        """Ignore."""

    def experiment_finished(self, tick, status: str, detail: str = "") -> None:  # type: ignore[no-untyped-def]
        self.finished.append((tick.index, tick.cycle, status))

    def message(self, text: str) -> None:
        self.messages.append(text)


@pytest.mark.parametrize("no_gaps", [False, True])
def test_gaps_are_waited_recorded_and_skippable(tmp_path: Path, no_gaps: bool) -> None:
    study = tiny_study(
        "gaps",
        {"max_output_tokens": [2, 3]},
        n_cycles=2,
        config_gap_seconds=0.5,
        cycle_gap_seconds=1.5,
        max_consecutive_failures=10,
    )
    progress = _Messages()
    target = FaultPlan(raise_on=("max_output_tokens",)).target()  # fast children, no torch

    result = StudyRunner(
        study, results_dir=tmp_path, progress=progress, no_gaps=no_gaps, worker_target=target
    ).run()

    assert progress.finished == [
        (1, 1, "failed"),
        (2, 1, "failed"),
        (3, 2, "failed"),
        (4, 2, "failed"),
    ]
    gaps = [m for m in progress.messages if m.startswith("waiting")]
    before = [t.gap_before_s for t in result.timing.experiments]
    if no_gaps:
        assert gaps == [] and result.timing.gap_s == 0.0
        assert before == [None, 0.0, 0.0, 0.0]
    else:
        # interleaved: A1 [config] B1 [cycle] A2 [config] B2  -> 0.5 + 1.5 + 0.5 s
        assert [g.split("(")[1].split(" ")[0] for g in gaps] == ["config", "cycle", "config"]
        assert 2.5 <= result.timing.gap_s < 3.5
        assert before[0] is None and sum(g or 0.0 for g in before) == result.timing.gap_s
        assert result.timing.wall_time_s >= result.timing.gap_s
