"""Telemetry sampler process (spawn) and the timeline it produces."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from llenergymeasure.core.energy._nvml import SLOWDOWN_REASONS
from llenergymeasure.core.energy.quality import thermal_flags
from llenergymeasure.core.energy.sampler import NvmlSampleSource, TelemetrySampler
from llenergymeasure.core.energy.timeline import Timeline, read_parquet, trapezoid_j
from llenergymeasure.exceptions import MeterError
from llenergymeasure.testing import FakeDevice, FakeNVML


@dataclasses.dataclass(frozen=True)
class BrokenSource:
    """A source whose hardware cannot be opened (top level: picklable)."""

    def open(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("no hardware here")


def test_sampler_process_samples_fake_gpus_on_the_parent_clock(tmp_path: Path) -> None:
    devices = [
        FakeDevice(
            "GPU-fake-0", power_w=((0.0, 100.0), (0.5, 300.0)), power_instant_supported=False
        ),
        FakeDevice("GPU-fake-1", power_w=50.0, temperature_c=((0.0, 40.0), (0.4, 60.0))),
    ]
    fake = FakeNVML(devices)  # real time.monotonic: the child computes the same values
    sampler = TelemetrySampler(NvmlSampleSource((0, 1), fake=fake), interval_s=0.05)
    sampler.start()
    try:
        t0 = time.monotonic()
        time.sleep(0.8)
        t1 = time.monotonic()
        energy_0 = sampler.polled_energy_j("gpu:0", t0, t1)  # flushes: samples reach past t1
    finally:
        sampler.stop()
    assert not sampler.running
    rows = sampler.timeline.rows
    assert {r["device"] for r in rows} == {"gpu:0", "gpu:1"}
    n = len(sampler.timeline.window_rows(t0, t1, "gpu:0"))
    assert 10 <= n <= 20  # ~16 ticks at 50 ms, plus flushes; proves it sleeps between ticks
    assert all(r["power_instant_w"] is None for r in rows if r["device"] == "gpu:0")
    assert all(r["power_instant_w"] == 50.0 for r in rows if r["device"] == "gpu:1")
    expected = fake.devices[0]
    from llenergymeasure.testing import integral_j

    exact = integral_j(expected.power_w, t0 - fake.t0_s, t1 - fake.t0_s)
    assert energy_0 == pytest.approx(exact, rel=0.08)  # 50 ms sampling of a power step
    summary = sampler.timeline.summarise(t0, t1, 0.05)
    assert summary.max_temperature_c == 60.0
    path = sampler.timeline.to_parquet(tmp_path / "t.parquet")
    assert len(read_parquet(path).rows) == len(rows)


def test_sampler_start_failure_raises_meter_error_with_child_traceback() -> None:
    sampler = TelemetrySampler(BrokenSource(), interval_s=0.05)
    with pytest.raises(MeterError, match="no hardware here"):
        sampler.start()
    assert not sampler.running


def test_unsupported_fields_are_none_and_not_asked_again() -> None:
    from llenergymeasure.core.energy._nvml import nvml
    from llenergymeasure.testing import NVML_ERROR_NOT_SUPPORTED, FakeError

    errors = {"nvmlDeviceGetTemperature": FakeError(NVML_ERROR_NOT_SUPPORTED)}
    fake = FakeNVML([FakeDevice("GPU-a", power_instant_supported=False, errors=errors)])
    with nvml.using(None):
        read = NvmlSampleSource((0,), fake=fake).open()
        rows = read() + read()
    assert [r["temperature_c"] for r in rows] == [None, None]
    assert [r["power_instant_w"] for r in rows] == [None, None]
    assert rows[0]["power_w"] == 100.0 and rows[0]["throttle_mask"] == 0
    assert fake.call_count("nvmlDeviceGetTemperature", 0) == 1


def test_trapezoid_interpolates_at_edges() -> None:
    pts = [(0.0, 0.0), (1.0, 100.0), (2.0, 100.0)]
    assert trapezoid_j(pts, 0.0, 2.0) == pytest.approx(150.0)
    assert trapezoid_j(pts, 0.5, 1.5) == pytest.approx(0.5 * 75.0 + 0.5 * 100.0)
    assert trapezoid_j(pts, 2.0, 3.0) == pytest.approx(100.0)  # held after the last sample
    assert trapezoid_j([], 0.0, 1.0) is None


def _rows(n: int, device: str = "gpu:0", **over: object) -> list[dict[str, object]]:
    base = {
        "power_w": 100.0,
        "power_instant_w": None,
        "temperature_c": 50.0,
        "sm_clock_mhz": 1980.0,
        "memory_used_mb": 1.0,
        "utilisation_pct": 90.0,
        "throttle_mask": 0,
        "t_unix_s": 0.0,
    }
    rows = []
    for i in range(n):
        row = {**base, "t_s": i * 0.1, "device": device}
        for k, v in over.items():
            row[k] = v(i) if callable(v) else v
        rows.append(row)
    return rows


def test_summary_throttle_seconds_clock_drift_and_flags() -> None:
    # sw power cap (0x4) for the second half; clocks fall 1980 -> 1700; temp 50 -> 75.
    tl = Timeline(
        _rows(
            101,
            throttle_mask=lambda i: 0x4 if i >= 50 else 0x1,
            sm_clock_mhz=lambda i: 1980.0 if i < 50 else 1700.0,
            temperature_c=lambda i: 50.0 + i / 4,
        )
    )
    s = tl.summarise(0.0, 10.0, 0.1)
    assert s.sample_count == 101
    assert s.throttle_s_by_reason["sw_power_cap"] == pytest.approx(5.0)
    assert s.throttle_s_by_reason["gpu_idle"] == pytest.approx(5.0)
    assert s.sm_clock_drift_pct == pytest.approx(100 * (1700 - 1980) / 1980)
    assert s.temperature_rise_c == pytest.approx(25.0)
    codes = [f.code for f in thermal_flags(s, SLOWDOWN_REASONS)]
    assert codes == ["throttling", "thermal_drift"]


def test_summary_of_a_steady_gpu_has_no_flags() -> None:
    s = Timeline(_rows(50, throttle_mask=0x1)).summarise(0.0, 5.0, 0.1)
    assert thermal_flags(s, SLOWDOWN_REASONS) == []  # idle reason is not a slowdown


def test_polled_prefers_instant_power_when_every_sample_has_it() -> None:
    tl = Timeline(_rows(11, power_instant_w=200.0))
    assert tl.power_field("gpu:0", 0.0, 1.0) == "power_instant_w"
    assert tl.polled_energy_j("gpu:0", 0.0, 1.0) == pytest.approx(200.0)
    assert tl.polled_energy_j("gpu:0", 0.0, 1.0, field="power_w") == pytest.approx(100.0)
