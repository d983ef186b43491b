"""Warm-up: fixed count, CV convergence with a cap, thermal floor."""

from __future__ import annotations

import pytest

from llenergymeasure.config.models import WarmupConfig
from llenergymeasure.orchestration.warmup import coefficient_of_variation, run_warmup
from llenergymeasure.testing import ManualClock


def _steps(latencies: list[float], clock: ManualClock):  # type: ignore[no-untyped-def]
    """A warm-up step that takes the scripted latencies (then the last one forever)."""
    calls = {"n": 0}

    def step() -> float:
        latency = latencies[min(calls["n"], len(latencies) - 1)]
        calls["n"] += 1
        clock.advance(latency)
        return latency

    return step, calls


def test_fixed_mode_runs_exactly_n() -> None:
    clock = ManualClock()
    step, calls = _steps([0.5], clock)
    result = run_warmup(step, WarmupConfig(n_warmup=4), clock=clock.now)
    assert calls["n"] == 4 and result.runs == 4 and result.mode == "fixed"
    assert result.converged is None
    assert result.duration_s == pytest.approx(2.0)
    assert result.thermal_floor_waited_s == 0.0


def test_cv_mode_stops_when_the_last_window_is_steady() -> None:
    clock = ManualClock()
    # compile-like first runs, then steady
    step, calls = _steps([5.0, 2.0, 1.0, 1.0, 1.0, 1.0], clock)
    settings = WarmupConfig(convergence=True, window=3, cv_threshold=0.05, max_warmup=20)
    result = run_warmup(step, settings, clock=clock.now)
    assert result.mode == "cv" and result.converged is True
    assert calls["n"] == 5  # [1, 1, 1] is the first steady window of 3
    assert result.final_cv == pytest.approx(0.0)


def test_cv_mode_gives_up_at_the_cap_and_says_so() -> None:
    clock = ManualClock()
    noisy = [1.0, 2.0] * 10
    step, calls = _steps(noisy, clock)
    settings = WarmupConfig(convergence=True, window=3, cv_threshold=0.05, max_warmup=6)
    result = run_warmup(step, settings, clock=clock.now)
    assert calls["n"] == 6 and result.converged is False
    assert result.final_cv is not None and result.final_cv > 0.05


def test_thermal_floor_keeps_the_workload_running() -> None:
    clock = ManualClock()
    step, calls = _steps([1.0], clock)
    result = run_warmup(step, WarmupConfig(n_warmup=2, thermal_floor_s=5.0), clock=clock.now)
    assert calls["n"] == 5 and result.runs == 5
    assert result.thermal_floor_waited_s == pytest.approx(3.0)


def test_disabled_runs_nothing() -> None:
    step, calls = _steps([1.0], ManualClock())
    assert run_warmup(step, WarmupConfig(enabled=False)).mode == "disabled"
    assert calls["n"] == 0


def test_cv_definition() -> None:
    assert coefficient_of_variation([1.0]) is None
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(2**0.5 / 2)


def test_cv_mode_stops_as_soon_as_two_calls_after_the_first_agree() -> None:
    clock = ManualClock()
    # a first call with one-time costs, then steady: the old rule (the first call inside a
    # window of 5) needed 6 calls
    step, calls = _steps([10.0, 1.0, 1.01, 1.0, 1.0, 1.0], clock)
    result = run_warmup(step, WarmupConfig(convergence=True), clock=clock.now)
    assert calls["n"] == 3 and result.converged is True
    assert result.first_call_s == 10.0 and result.steady_call_s == pytest.approx(1.005)
    assert result.one_time_s == pytest.approx(8.995)


def test_cv_mode_respects_its_minimum_and_never_counts_the_first_call() -> None:
    clock = ManualClock()
    step, calls = _steps([1.0], clock)  # steady from the start: still two calls after the first
    result = run_warmup(step, WarmupConfig(convergence=True, window=3), clock=clock.now)
    assert calls["n"] == 3 and result.converged is True
    # a second call still settling keeps it going until the last calls agree
    clock = ManualClock()
    step, calls = _steps([10.0, 3.0, 1.0, 1.0, 1.0], clock)
    result = run_warmup(step, WarmupConfig(convergence=True, window=2), clock=clock.now)
    assert calls["n"] == 4 and result.converged is True
    # a cap below the minimum: it runs to the cap and says it did not converge
    clock = ManualClock()
    step, calls = _steps([1.0], clock)
    settings = WarmupConfig(convergence=True, window=2, max_warmup=2)
    result = run_warmup(step, settings, clock=clock.now)
    assert calls["n"] == 2 and result.converged is False


def test_fixed_mode_records_the_first_call_apart() -> None:
    clock = ManualClock()
    step, _ = _steps([4.0, 1.0, 1.2], clock)
    result = run_warmup(step, WarmupConfig(n_warmup=3), clock=clock.now)
    assert result.first_call_s == 4.0 and result.steady_call_s == pytest.approx(1.1)
    one = run_warmup(_steps([2.0], ManualClock())[0], WarmupConfig(n_warmup=1))
    assert one.first_call_s == 2.0 and one.steady_call_s is None and one.one_time_s is None
