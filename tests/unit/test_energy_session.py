"""EnergySession, meter selection, idle baseline, estimate/null/zeus/codecarbon meters."""

from __future__ import annotations

import dataclasses
import sys
import types
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import pytest

from llenergymeasure.core.energy import (
    BaselineCache,
    BaselineSettings,
    EnergySession,
    NvmlSampleSource,
    select_energy_meters,
)
from llenergymeasure.core.energy.baseline import adjust_for_idle
from llenergymeasure.core.energy.estimate import EstimateMeter
from llenergymeasure.core.energy.null import NullMeter
from llenergymeasure.domain.energy import EnergyReport, IdleBaseline
from llenergymeasure.exceptions import MeterError
from llenergymeasure.testing import (
    NVML_ERROR_LIBRARY_NOT_FOUND,
    FakeDevice,
    FakeNVML,
    ManualClock,
    fake_gpus,
)

NO_RAPL = Path("/nonexistent-powercap")


@dataclasses.dataclass(frozen=True)
class BrokenSource:
    """A telemetry source whose hardware cannot be opened (top level: picklable for spawn)."""

    def open(self) -> Callable[[], list[dict[str, object]]]:
        raise RuntimeError("no hardware here")


def _rapl_root(tmp_path: Path) -> Path:
    z = tmp_path / "powercap" / "intel-rapl:0"
    z.mkdir(parents=True)
    (z / "name").write_text("package-0")
    (z / "energy_uj").write_text("0")
    (z / "max_energy_range_uj").write_text("262143328850")
    return tmp_path / "powercap"


def _session(clock: ManualClock, **kw: object) -> EnergySession:
    kw.setdefault("rapl_root", NO_RAPL)
    kw.setdefault("sampler_enabled", False)
    kw.setdefault("environ", {})
    return EnergySession(clock=clock.now, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "cvd", "expected_keys"),
    [
        (1, None, ["gpu:0"]),
        (2, None, ["gpu:0", "gpu:1"]),
        (4, None, ["gpu:0", "gpu:1", "gpu:2", "gpu:3"]),
        (4, "1,3", ["gpu:1", "gpu:3"]),
    ],
)
@pytest.mark.parametrize("background", [False, True], ids=["probe", "background_probe"])
def test_session_measures_visible_gpus(
    n: int, cvd: str | None, expected_keys: list[str], background: bool
) -> None:
    clock = ManualClock()
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    with (
        FakeNVML(fake_gpus(n, power_w=150.0), clock=clock.now).installed(),
        _session(clock, environ=env, probe_in_background=background) as session,
    ):
        assert session._require_plan().nvml_meter.probe_in_background is background  # type: ignore[union-attr]
        session.begin_window("m")
        clock.advance(12.0)
        report = session.end_window("m")
    assert sorted(report.measurements[0].energy_j_by_device) == expected_keys
    assert report.gpu_energy_j == pytest.approx(150.0 * 12.0 * len(expected_keys), rel=0.01)
    assert report.cpu_energy_j is None and "cpu_package" in report.not_measured
    assert report.meter_selection.meters == ["nvml", "null"]
    assert report.gpu_update_period_ms_by_device[expected_keys[0]] == pytest.approx(100.0, abs=6)
    assert EnergyReport.model_validate_json(report.model_dump_json()) == report


def test_sync_hook_runs_at_both_edges() -> None:
    clock = ManualClock()
    calls: list[float] = []
    with FakeNVML(fake_gpus(1), clock=clock.now).installed(), _session(clock) as session:
        session.begin_window("m", sync=lambda: calls.append(clock.now()))
        clock.advance(1.0)
        session.end_window("m", sync=lambda: calls.append(clock.now()))
    assert len(calls) == 2 and calls[1] - calls[0] == pytest.approx(1.0)


def test_persistence_mode_off_is_flagged() -> None:
    clock = ManualClock()
    with (
        FakeNVML([FakeDevice("GPU-p", persistence_mode=False)], clock=clock.now).installed(),
        _session(clock) as session,
    ):
        session.begin_window("m")
        clock.advance(12.0)
        report = session.end_window("m")
    assert "persistence_mode_off" in {f.code for f in report.warnings}


def test_session_with_sampler_cross_checks_counter(tmp_path: Path) -> None:
    import time

    fake = FakeNVML(fake_gpus(2, power_w=200.0, counter_period_s=0.05))
    timeline = tmp_path / "timeline.parquet"
    with fake.installed():
        session = EnergySession(
            rapl_root=NO_RAPL, environ={}, sample_interval_ms=50, timeline_path=timeline
        )
        session.start()
        session.begin_window("m")
        time.sleep(0.6)
        report = session.end_window("m")
        assert session.stop() == timeline
    assert report.polled_gpu_energy_j is not None and report.gpu_energy_j is not None
    assert report.counter_vs_polled_pct is not None and abs(report.counter_vs_polled_pct) < 10
    assert report.thermal is not None and report.thermal.sample_count >= 8
    assert timeline.exists()


def test_baseline_measured_cached_and_applied(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = BaselineSettings(duration_s=5.0, cache_ttl_s=600, cache_path=tmp_path / "b.json")
    power = ((0.0, 80.0), (100.0, 300.0))  # idle 80 W, then load from t=100 s
    with (
        FakeNVML(fake_gpus(2, power_w=power), clock=clock.now).installed(),
        _session(clock, baseline=settings) as session,
    ):
        first = session.measure_baseline()
        assert first is not None and not first.cached
        assert first.idle_power_w == pytest.approx(160.0, rel=0.02)
        clock.advance(100.0)
        session.begin_window("m")
        clock.advance(10.0)
        report = session.end_window("m")
        with _session(clock, baseline=settings) as again:
            second = again.measure_baseline()
    assert second is not None and second.cached and second.idle_power_w == first.idle_power_w
    assert report.baseline is not None
    assert report.baseline.gross_energy_j == report.gpu_energy_j == pytest.approx(6000.0, rel=0.01)
    assert report.baseline.energy_above_idle_j == pytest.approx(6000.0 - 1600.0, rel=0.02)


def test_baseline_cache_ttl_and_key(tmp_path: Path) -> None:
    cache = BaselineCache(tmp_path / "c.json", ttl_s=60)
    b = IdleBaseline(
        key="GPU-a",
        idle_power_w=70.0,
        idle_power_w_by_device={"gpu:0": 70.0},
        duration_s=5,
        method="counter",
        measured_at_unix_s=1000.0,
    )
    cache.put(b)
    assert cache.get("GPU-a", now_unix_s=1030.0) is not None
    assert cache.get("GPU-a", now_unix_s=1061.0) is None
    assert cache.get("GPU-b", now_unix_s=1030.0) is None


def test_negative_energy_above_idle_is_clamped_and_gross_kept() -> None:
    b = IdleBaseline(
        key="k",
        idle_power_w=100.0,
        idle_power_w_by_device={},
        duration_s=5,
        method="counter",
        measured_at_unix_s=0.0,
    )
    adj, flag = adjust_for_idle(gross_energy_j=800.0, duration_s=10.0, baseline=b)
    assert adj.gross_energy_j == 800.0 and adj.energy_above_idle_j == 0.0 and adj.clamped
    assert flag is not None and flag.code == "baseline_clamped"
    adj, flag = adjust_for_idle(1500.0, 10.0, b)
    assert adj.energy_above_idle_j == 500.0 and flag is None


def test_auto_without_gpu_uses_rapl_when_readable(tmp_path: Path) -> None:
    with FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND).installed():
        plan = select_energy_meters("auto", rapl_root=_rapl_root(tmp_path), environ={})
    assert plan.selection.meters == ["null", "rapl"]
    assert "NVML unavailable" in plan.selection.unavailable["nvml"]


def test_auto_without_gpu_or_rapl_estimates_cpu() -> None:
    clock = ManualClock()
    with (
        FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND).installed(),
        _session(clock) as session,
    ):
        session.begin_window("m")
        clock.advance(2.0)
        report = session.end_window("m")
    assert report.meter_selection.meters == ["null", "estimate"]
    assert "gpu" in report.not_measured and report.gpu_energy_j is None
    assert report.measurements[0].method == "estimate"
    assert "estimate_used" in {f.code for f in report.warnings}


def test_auto_with_no_visible_gpu_records_reason() -> None:
    with FakeNVML(fake_gpus(2)).installed():
        plan = select_energy_meters("auto", rapl_root=NO_RAPL, environ={"CUDA_VISIBLE_DEVICES": ""})
    assert "no GPU visible" in plan.selection.unavailable["nvml"]


@pytest.mark.parametrize(
    ("backend", "match"),
    [
        ("nvml", "NVML unavailable"),
        ("zeus", "NVML unavailable"),
        ("rapl", "no RAPL"),
    ],
)
def test_explicit_backend_unavailable_raises_with_fix(backend: str, match: str) -> None:
    with (
        FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND).installed(),
        pytest.raises(MeterError, match=match),
    ):
        select_energy_meters(backend, rapl_root=NO_RAPL, environ={})


@pytest.mark.parametrize("backend", ["zeus", "codecarbon"])
def test_missing_optional_package_names_the_extra(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, backend, None)  # import now fails as if not installed
    monkeypatch.setitem(sys.modules, f"{backend}.monitor", None)
    with (
        FakeNVML(fake_gpus(1)).installed(),
        pytest.raises(MeterError, match=rf"llenergymeasure\[{backend}\]"),
    ):
        select_energy_meters(backend, rapl_root=NO_RAPL, environ={})


def test_unknown_backend_suggests() -> None:
    with pytest.raises(MeterError, match="Did you mean 'nvml'"):
        select_energy_meters("nvlm")


def test_null_backend_measures_nothing_and_says_so() -> None:
    clock = ManualClock()
    fake = FakeNVML(fake_gpus(1), clock=clock.now)
    with fake.installed(), _session(clock, energy_backend="null") as session:
        session.begin_window("m")
        report = session.end_window("m")
    assert (
        report.measurements == [] and report.gpu_energy_j is None and report.total_energy_j is None
    )
    assert set(report.not_measured) == {"gpu", "cpu_package", "dram"}
    assert fake.call_count("nvmlInit") == 0


def test_null_meter_never_returns_zero() -> None:
    meter = NullMeter("no GPU here")
    meter.begin_window("w")
    reading = meter.end_window("w")
    assert reading.measurements == [] and reading.not_measured[0].reason == "no GPU here"


CpuTimes = namedtuple("CpuTimes", "user system idle iowait")


def test_estimate_meter_is_tdp_times_utilisation() -> None:
    clock = ManualClock()
    times = iter([CpuTimes(10.0, 0.0, 90.0, 0.0), CpuTimes(40.0, 10.0, 140.0, 10.0)])
    meter = EstimateMeter(tdp_w=100.0, cpu_times=lambda: next(times), clock=clock.now)
    meter.begin_window("w")
    clock.advance(4.0)
    reading = meter.end_window("w")
    # busy 40 of 100 CPU-seconds -> 40 %; 100 W x 0.4 x 4 s = 160 J
    assert reading.measurements[0].energy_j == pytest.approx(160.0)
    assert reading.measurements[0].method == "estimate"
    assert reading.flags[0].code == "estimate_used"


def test_zeus_owns_nvml_no_sampler_and_keys_map_to_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeZeusMonitor:  # stands in for the hardware-facing library at its API
        def __init__(self, gpu_indices: list[int]) -> None:
            self.gpu_indices = gpu_indices

        def begin_window(self, key: str, sync_execution: bool = True) -> None:
            assert sync_execution is False

        def end_window(self, key: str, sync_execution: bool = True) -> object:
            return types.SimpleNamespace(
                time=3.0, gpu_energy={i: 10.0 * (i + 1) for i in self.gpu_indices}
            )

    module = types.ModuleType("zeus.monitor")
    module.ZeusMonitor = FakeZeusMonitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zeus", types.ModuleType("zeus"))
    monkeypatch.setitem(sys.modules, "zeus.monitor", module)
    clock = ManualClock()
    fake = FakeNVML(fake_gpus(4), clock=clock.now)
    with (
        fake.installed(),
        _session(
            clock,
            energy_backend="zeus",
            sampler_enabled=True,
            environ={"CUDA_VISIBLE_DEVICES": "1,3"},
        ) as session,
    ):
        assert session.sampler is None
        session.begin_window("m")
        report = session.end_window("m")
    assert report.measurements[0].energy_j_by_device == {"gpu:1": 10.0, "gpu:3": 20.0}
    assert fake.call_count("nvmlDeviceGetTotalEnergyConsumption", 1) == 0


def test_sampler_that_cannot_start_degrades_to_counter_only() -> None:
    clock = ManualClock()
    with (
        FakeNVML(fake_gpus(1, power_w=100.0), clock=clock.now).installed(),
        _session(clock, sampler_enabled=True, sample_source=BrokenSource()) as session,
    ):
        assert session.sampler is not None  # launched, not waited for: the window waits
        session.begin_window("m")
        assert session.sampler is None
        clock.advance(12.0)
        report = session.end_window("m")
    assert report.gpu_energy_j == pytest.approx(1200.0, rel=0.01) and report.thermal is None
    flag = next(f for f in report.warnings if f.code == "sampler_unavailable")
    assert "no hardware here" in flag.message


def test_total_energy_sums_measured_scopes_only() -> None:
    with FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND).installed():
        plan = select_energy_meters("null")
    report = EnergyReport(window="w", duration_s=1.0, meter_selection=plan.selection)
    assert report.total_energy_j is None
    assert report.model_copy(update={"gpu_energy_j": 0.0}).total_energy_j == 0.0
    assert (
        report.model_copy(update={"gpu_energy_j": 2.0, "dram_energy_j": 1.0}).total_energy_j == 3.0
    )


def test_sampler_launched_at_start_and_waited_for_by_the_first_window() -> None:
    """start() does not wait for the sampler's process (its start overlaps baseline and
    warm-up); the first window does, so every window has the sampler running."""
    clock = ManualClock()
    source = NvmlSampleSource((0,), fake=FakeNVML(fake_gpus(1)))
    with (
        FakeNVML(fake_gpus(1, power_w=100.0), clock=clock.now).installed(),
        _session(clock, sampler_enabled=True, sample_source=source) as session,
    ):
        sampler = session.sampler
        assert sampler is not None and not sampler.ready
        session.begin_window("m")
        assert sampler.ready and sampler.running
        clock.advance(2.0)
        report = session.end_window("m")
    assert report.gpu_energy_j == pytest.approx(200.0, rel=0.01)
    assert not any(f.code == "sampler_unavailable" for f in report.warnings)
    assert len(sampler.timeline.rows) >= 2 and not sampler.running
