"""Idle baseline context/clock state: cache key by compute context, power trend, settled flag."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.core.energy import BaselineCache, BaselineSettings, EnergySession, Timeline
from llenergymeasure.core.energy._nvml import nvml
from llenergymeasure.core.energy.baseline import baseline_key, idle_state, power_trend_pct
from llenergymeasure.core.energy.quality import BASELINE_SETTLED_PCT
from llenergymeasure.domain.energy import (
    BaselineAdjustment,
    EnergyReport,
    IdleBaseline,
    MeterSelection,
)
from llenergymeasure.results.aggregation import _merge_baselines
from llenergymeasure.testing import (
    NVML_ERROR_NOT_SUPPORTED,
    FakeDevice,
    FakeError,
    FakeNVML,
    ManualClock,
    fake_gpus,
)

NO_RAPL = Path("/nonexistent-powercap")
HOST = socket.gethostname()  # the baseline cache is keyed per node


def _settings(tmp_path: Path, duration_s: float = 5.0) -> BaselineSettings:
    return BaselineSettings(duration_s=duration_s, cache_ttl_s=600, cache_path=tmp_path / "b.json")


def _manual_session(clock: ManualClock, settings: BaselineSettings) -> EnergySession:
    """A session on a hand-advanced clock, without the sampler process."""
    return EnergySession(
        rapl_root=NO_RAPL,
        sampler_enabled=False,
        environ={},
        baseline=settings,
        clock=clock.now,
        sleep=clock.sleep,
    )


def _sampled_session(settings: BaselineSettings) -> EnergySession:
    """A real-time session with the telemetry sampler at 50 ms."""
    return EnergySession(rapl_root=NO_RAPL, environ={}, sample_interval_ms=50, baseline=settings)


def _rows(device: str, watts: list[float], clock_mhz: float, temp_c: float) -> list[dict[str, Any]]:
    return [
        {
            "t_s": float(i),
            "device": device,
            "power_w": w,
            "sm_clock_mhz": clock_mhz,
            "temperature_c": temp_c,
        }
        for i, w in enumerate(watts)
    ]


# --- NVML wrapper and fake ------------------------------------------------------------
def test_compute_process_count_from_fake_nvml_and_unknown_when_unsupported() -> None:
    devices = [
        FakeDevice("GPU-a", compute_processes=((0.0, 0.0), (10.0, 2.0))),
        FakeDevice(
            "GPU-b",
            errors={"nvmlDeviceGetComputeRunningProcesses": FakeError(NVML_ERROR_NOT_SUPPORTED)},
        ),
    ]
    clock = ManualClock()
    with FakeNVML(devices, clock=clock.now).installed():
        a, b = nvml.handle_by_index(0), nvml.handle_by_index(1)
        assert nvml.compute_process_count(a) == 0
        clock.advance(10.0)
        assert nvml.compute_process_count(a) == 2
        assert nvml.optional(nvml.compute_process_count, b) is None


# --- cache key ------------------------------------------------------------------------
def test_baseline_key_says_whether_a_compute_context_was_open() -> None:
    uuids = ["GPU-b", "GPU-a"]
    assert baseline_key(uuids, True) == "GPU-a,GPU-b|context"
    assert baseline_key(uuids, False) == "GPU-a,GPU-b|no-context"
    assert baseline_key(uuids, None) == "GPU-a,GPU-b|unknown"


def test_no_context_baseline_is_not_reused_once_a_context_is_open(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = _settings(tmp_path)
    # No context: 73 W at a low clock; a process opens a context at t=50 s: 125 W at full clock.
    gpus = fake_gpus(
        1, power_w=((0.0, 73.0), (50.0, 125.0)), compute_processes=((0.0, 0.0), (50.0, 1.0))
    )
    with FakeNVML(gpus, clock=clock.now).installed():
        with _manual_session(clock, settings) as session:
            before = session.measure_baseline()
        clock.advance(60.0)
        with _manual_session(clock, settings) as session:
            ready = session.measure_baseline()
        with _manual_session(clock, settings) as session:
            again = session.measure_baseline()
    assert before is not None and ready is not None and again is not None
    assert before.key == f"{HOST}/GPU-fake-0|no-context" and before.compute_processes == 0
    assert before.idle_power_w == pytest.approx(73.0, rel=0.02)
    assert ready.key == f"{HOST}/GPU-fake-0|context" and ready.compute_processes == 1
    assert not ready.cached and ready.idle_power_w == pytest.approx(125.0, rel=0.02)
    assert again.cached and again.key == ready.key and again.idle_power_w == ready.idle_power_w
    stored = json.loads(settings.cache_path.read_text())  # type: ignore[union-attr]
    assert sorted(stored) == [f"{HOST}/GPU-fake-0|context", f"{HOST}/GPU-fake-0|no-context"]
    # Without a sampler the window's state is unknown, never guessed.
    assert ready.sm_clock_mhz is None and ready.power_trend_pct is None and ready.settled is None


def test_unreadable_process_count_gives_unknown_key(tmp_path: Path) -> None:
    clock = ManualClock()
    error = {"nvmlDeviceGetComputeRunningProcesses": FakeError(NVML_ERROR_NOT_SUPPORTED)}
    with (
        FakeNVML(fake_gpus(2, power_w=80.0, errors=error), clock=clock.now).installed(),
        _manual_session(clock, _settings(tmp_path)) as session,
    ):
        baseline = session.measure_baseline()
    assert baseline is not None and baseline.key == f"{HOST}/GPU-fake-0,GPU-fake-1|unknown"
    assert baseline.compute_processes is None
    assert baseline.idle_power_w == pytest.approx(160.0, rel=0.02)


def test_process_count_is_summed_over_the_gpus_in_use(tmp_path: Path) -> None:
    clock = ManualClock()
    gpus = [FakeDevice("GPU-x", compute_processes=2.0), FakeDevice("GPU-y", compute_processes=1.0)]
    with (
        FakeNVML(gpus, clock=clock.now).installed(),
        _manual_session(clock, _settings(tmp_path)) as session,
    ):
        baseline = session.measure_baseline()
    assert baseline is not None and baseline.compute_processes == 3
    assert baseline.key == f"{HOST}/GPU-x,GPU-y|context"


# --- old cache files --------------------------------------------------------------------
def test_old_cache_entry_without_state_fields_still_loads_and_is_applied(tmp_path: Path) -> None:
    old_entry = {
        "cached": False,
        "duration_s": 5.0,
        "idle_power_w": 90.0,
        "idle_power_w_by_device": {"gpu:0": 90.0},
        "key": f"{HOST}/GPU-fake-0|context",
        "measured_at_unix_s": time.time(),
        "method": "counter",
    }
    legacy = dict(old_entry, key="GPU-fake-0")  # key format of earlier versions
    settings = _settings(tmp_path)
    settings.cache_path.write_text(  # type: ignore[union-attr]
        json.dumps({f"{HOST}/GPU-fake-0|context": old_entry, "GPU-fake-0": legacy})
    )
    cached_legacy = BaselineCache(settings.cache_path, 600).get("GPU-fake-0")
    assert cached_legacy is not None and cached_legacy.idle_power_w == 90.0
    assert cached_legacy.settled is None and cached_legacy.compute_processes is None
    clock = ManualClock()
    with (
        FakeNVML(fake_gpus(1, power_w=200.0, compute_processes=1.0), clock=clock.now).installed(),
        _manual_session(clock, settings) as session,
    ):
        baseline = session.measure_baseline()
        session.begin_window("m")
        clock.advance(10.0)
        report = session.end_window("m")
    assert baseline is not None and baseline.cached and baseline.idle_power_w == 90.0
    assert baseline.power_trend_pct is None and baseline.settled is None
    assert report.baseline is not None
    assert report.baseline.energy_above_idle_j == pytest.approx(2000.0 - 900.0, rel=0.01)
    assert "baseline_unsettled" not in {f.code for f in report.warnings}


# --- power trend over the window ----------------------------------------------------------
def test_power_trend_is_last_third_vs_first_third_summed_over_gpus() -> None:
    falling = [100.0, 100.0, 100.0, 99.0, 98.0, 97.0, 97.0, 97.0, 97.0]
    steady = [100.0] * 9
    timeline = Timeline(
        _rows("gpu:0", falling, 1980.0, 45.0) + _rows("gpu:1", steady, 1980.0, 41.0)
    )
    # first thirds: 100 + 100 = 200 W; last thirds: 97 + 100 = 197 W -> -1.5 %
    assert power_trend_pct(timeline, 0.0, 8.0, ["gpu:0", "gpu:1"]) == pytest.approx(-1.5)
    assert power_trend_pct(timeline, 0.0, 8.0, ["gpu:0"]) == pytest.approx(-3.0)
    assert power_trend_pct(timeline, 0.0, 4.0, ["gpu:0"]) is None  # 5 samples < 6
    assert power_trend_pct(timeline, 0.0, 8.0, []) is None
    state = idle_state(timeline, 0.0, 8.0, ["gpu:0", "gpu:1"])
    assert state.sm_clock_mhz == 1980.0 and state.temperature_c == pytest.approx(43.0)
    assert state.settled is False  # 1.5 % > BASELINE_SETTLED_PCT
    assert BASELINE_SETTLED_PCT == 1.0
    assert idle_state(timeline, 0.0, 8.0, ["gpu:1"]).settled is True
    assert idle_state(timeline, 0.0, 4.0, ["gpu:1"]).settled is None


def test_power_falling_during_baseline_is_unsettled_and_flags_later_windows(
    tmp_path: Path,
) -> None:
    # Cooling after earlier work: 300 W falling by 1 W every 0.1 s (10 W/s) for 20 s.
    falling = tuple((0.1 * i, 300.0 - i) for i in range(200))
    fake = FakeNVML(
        fake_gpus(1, power_w=falling, counter_period_s=0.05, temperature_c=48.0, sm_clock_mhz=1980)
    )
    with fake.installed(), _sampled_session(_settings(tmp_path, duration_s=1.0)) as session:
        baseline = session.measure_baseline()
        session.begin_window("m")
        time.sleep(0.3)
        report = session.end_window("m")
    assert baseline is not None and baseline.compute_processes == 0
    assert baseline.settled is False
    assert baseline.power_trend_pct is not None
    # The thirds' centres are ~2/3 of the window apart, at -10 W/s: about -2.3 % at ~290 W.
    assert -10.0 < baseline.power_trend_pct < -BASELINE_SETTLED_PCT
    expected_pct = -100.0 * 10.0 * (2.0 / 3.0) * baseline.duration_s / baseline.idle_power_w
    assert baseline.power_trend_pct == pytest.approx(expected_pct, rel=0.35)
    assert baseline.sm_clock_mhz == 1980.0 and baseline.temperature_c == 48.0
    flags = [f for f in report.warnings if f.code == "baseline_unsettled"]
    assert len(flags) == 1 and flags[0].severity == "warning"
    assert f"{baseline.power_trend_pct:+.1f} %" in flags[0].message
    assert "gross energy is unaffected" in flags[0].message
    assert report.baseline is not None and report.baseline.baseline.settled is False
    assert EnergyReport.model_validate_json(report.model_dump_json()) == report


def test_steady_power_during_baseline_is_settled_without_flag(tmp_path: Path) -> None:
    fake = FakeNVML(fake_gpus(2, power_w=124.0, counter_period_s=0.05, compute_processes=1.0))
    with fake.installed(), _sampled_session(_settings(tmp_path, duration_s=1.0)) as session:
        baseline = session.measure_baseline()
        session.begin_window("m")
        time.sleep(0.3)
        report = session.end_window("m")
    assert baseline is not None and baseline.key == f"{HOST}/GPU-fake-0,GPU-fake-1|context"
    assert baseline.compute_processes == 2
    assert baseline.power_trend_pct == 0.0 and baseline.settled is True
    assert baseline.sm_clock_mhz == 1980.0 and baseline.temperature_c == 40.0
    assert baseline.idle_power_w == pytest.approx(248.0, rel=0.05)
    assert report.baseline is not None
    assert "baseline_unsettled" not in {f.code for f in report.warnings}


# --- multi-process aggregation --------------------------------------------------------------
def _adjustment(key: str, idle_w: float, trend: float | None, processes: int) -> BaselineAdjustment:
    settled = None if trend is None else abs(trend) <= BASELINE_SETTLED_PCT
    baseline = IdleBaseline(
        key=key,
        idle_power_w=idle_w,
        idle_power_w_by_device={f"gpu:{key[-1]}": idle_w},
        duration_s=5.0,
        method="counter",
        measured_at_unix_s=0.0,
        compute_processes=processes,
        sm_clock_mhz=1980.0 if processes else 345.0,
        temperature_c=40.0,
        power_trend_pct=trend,
        settled=settled,
    )
    return BaselineAdjustment(
        baseline=baseline,
        idle_power_w=idle_w,
        gross_energy_j=1000.0,
        idle_energy_j=idle_w * 5.0,
        energy_above_idle_j=1000.0 - idle_w * 5.0,
    )


def _reports(*adjustments: BaselineAdjustment) -> list[EnergyReport]:
    return [
        EnergyReport(
            window="measure",
            duration_s=5.0,
            baseline=a,
            meter_selection=MeterSelection(requested="auto", meters=["nvml"], reason="test"),
        )
        for a in adjustments
    ]


def test_merged_baseline_keeps_state_of_its_parts() -> None:
    merged, flags = _merge_baselines(
        _reports(_adjustment("GPU-0", 100.0, -3.0, 1), _adjustment("GPU-1", 300.0, 0.2, 1)),
        2000.0,
        5.0,
    )
    assert merged is not None and not flags
    assert merged.idle_power_w == 400.0 and merged.idle_energy_j == 2000.0
    assert merged.gross_energy_j == 2000.0 and merged.energy_above_idle_j == 0.0
    b = merged.baseline
    assert b.compute_processes == 2 and b.sm_clock_mhz == 1980.0 and b.temperature_c == 40.0
    assert b.power_trend_pct == pytest.approx((-3.0 * 100.0 + 0.2 * 300.0) / 400.0)
    assert b.settled is False  # one part was unsettled
    unknown, _ = _merge_baselines(
        _reports(_adjustment("GPU-0", 100.0, None, 0), _adjustment("GPU-1", 100.0, 0.0, 1)),
        2000.0,
        5.0,
    )
    assert unknown is not None
    assert unknown.baseline.power_trend_pct is None and unknown.baseline.settled is None
    assert unknown.baseline.sm_clock_mhz == pytest.approx((345.0 + 1980.0) / 2)
