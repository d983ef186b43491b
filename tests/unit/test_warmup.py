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
