"""Where an experiment's time went: the breakdown adds up, old results still break down."""

from __future__ import annotations

import pytest

from llenergymeasure.domain.timing import (
    COLUMNS,
    TimeBreakdown,
    parts_text,
    seconds_text,
    sum_breakdowns,
    time_breakdown,
)

PHASES = {
    "start": 0.8,
    "preflight": 0.01,
    "environment": 0.02,
    "imports": 2.0,
    "prompts": 0.3,
    "load": 1.5,
    "tokenise": 0.2,
    "energy_start": 0.6,
    "baseline": 5.0,
    "warmup": 1.2,
    "measure": 4.3,
    "metrics": 0.1,
}


def _parts_sum(b: TimeBreakdown) -> float:
    return sum(v for v in b.cells().values() if v is not None)


def test_the_parts_add_up_to_the_process_wall() -> None:
    b = time_breakdown(PHASES, 4.0, warmup_first_call_s=0.9, wall_s=17.0, save_s=0.05, exit_s=0.4)
    assert _parts_sum(b) == pytest.approx(17.0)
    assert b.window_s == 4.0 and b.close_s == pytest.approx(0.3)  # measure minus window
    # what is not a listed phase (pre-flight, environment) or not timed at all is "other"
    recorded = sum(PHASES.values()) - 4.3 + 4.0 + 0.3 + 0.05 + 0.4
    assert b.other_s == pytest.approx(0.03 + (17.0 - recorded))
    assert b.outside_s == pytest.approx(13.0)
    assert b.overhead_s == pytest.approx(13.0 - 1.5 - 5.0)  # minus load and baseline
    assert not b.start_derived and b.warmup_first_call_s == 0.9


def test_displayed_cells_add_up_within_rounding() -> None:
    b = time_breakdown(PHASES, 4.0, wall_s=17.0, save_s=0.05, exit_s=0.4)
    shown = [float(seconds_text(v)) for v in b.cells().values() if v is not None]
    assert sum(shown) == pytest.approx(float(seconds_text(b.wall_s)), abs=0.005 * len(shown))


def test_engine_start_is_counted_apart_from_load_and_out_of_overhead() -> None:
    phases = {**PHASES, "engine_start": 40.0}
    b = time_breakdown(phases, 4.0, wall_s=60.0)
    assert b.engine_start_s == 40.0
    assert b.overhead_s == pytest.approx(b.outside_s - 1.5 - 40.0 - 5.0)


def test_an_old_result_gets_a_derived_start() -> None:
    old = {k: v for k, v in PHASES.items() if k not in ("start", "imports", "energy_start")}
    b = time_breakdown(old, 4.0, wall_s=17.0)
    assert b.start_derived and b.imports_s is None and b.energy_start_s is None
    assert b.start_s == pytest.approx(17.0 - (sum(old.values()) - 4.3 + 4.0 + 0.3))
    assert _parts_sum(b) == pytest.approx(17.0)
    assert "start " in parts_text(b) and "*" in parts_text(b)


def test_without_a_wall_time_outside_is_the_sum_of_the_parts() -> None:
    b = time_breakdown(PHASES, 4.0)
    assert b.wall_s is None and b.save_s is None
    assert b.outside_s == pytest.approx(_parts_sum(b) - 4.0)


def test_sums_keep_unknown_fields_unknown() -> None:
    a = time_breakdown(PHASES, 4.0, wall_s=17.0)
    b = time_breakdown({"measure": 1.0}, 1.0, wall_s=2.0)
    total = sum_breakdowns([a, b])
    assert total is not None and total.wall_s == pytest.approx(19.0)
    assert total.engine_start_s is None and total.imports_s == pytest.approx(2.0)
    assert sum_breakdowns([]) is None
    assert [name for name, _ in COLUMNS][-1] == "other_s"


def test_phase_timer_moves_an_engine_start_out_of_the_load() -> None:
    from llenergymeasure.orchestration.assemble import PhaseTimer

    timer = PhaseTimer()
    timer.durations_s["load"] = 50.0
    timer.carve("engine_start", "load", 42.0)
    timer.carve("engine_start", "load", 0.0)  # no engine: nothing moves
    timer.add("start", 1.5)
    assert timer.durations_s == {"load": 8.0, "engine_start": 42.0, "start": 1.5}
    timer.carve("engine_start", "load", 100.0)  # never more than the load itself
    assert timer.durations_s["load"] == 0.0 and timer.durations_s["engine_start"] == 50.0


def test_the_cleanup_counts_in_other_and_the_verdict_names_the_warm_up_share() -> None:
    from llenergymeasure.study.summary import _overhead_verdict

    b = time_breakdown({**PHASES, "cleanup": 0.25}, 4.0, warmup_first_call_s=0.9)
    assert b.other_s == pytest.approx(0.01 + 0.02 + 0.25)  # pre-flight, environment, cleanup
    slow = time_breakdown(PHASES, 4.0, warmup_first_call_s=0.9)
    text = _overhead_verdict([b, slow], goal_s=5.0)
    assert "goal NOT met" in text
    assert "warm-up is 1.20 s of the mean (first call 0.90 s)" in text
