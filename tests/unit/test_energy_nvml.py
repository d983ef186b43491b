"""NVML meter and GPU resolution, driven by FakeNVML (1, 2 and 4 GPUs, visibility subsets)."""

from __future__ import annotations

import threading

import pytest

from llenergymeasure.core.energy._nvml import NvmlError, nvml
from llenergymeasure.core.energy.nvml import (
    NvmlMeter,
    ordering_warning,
    parse_cuda_visible_devices,
    probe_update_period_s,
    resolve_gpus,
)
from llenergymeasure.core.energy.timeline import Timeline
from llenergymeasure.exceptions import MeterError
from llenergymeasure.testing import (
    NVML_ERROR_UNKNOWN,
    FakeDevice,
    FakeError,
    FakeNVML,
    ManualClock,
    fake_gpus,
)

# (n GPUs, CUDA_VISIBLE_DEVICES, expected NVML indices measured)
TOPOLOGIES = [
    (1, None, [0]),
    (2, None, [0, 1]),
    (4, None, [0, 1, 2, 3]),
    (4, "1,3", [1, 3]),
    (4, "2", [2]),
    (4, "3,0", [3, 0]),
    (2, "GPU-fake-1", [1]),
    (4, "GPU-fake-2,1", [2, 1]),
    (4, "1,7,2", [1]),  # CUDA stops at the first invalid entry
    (2, "", []),
    (2, "-1", []),
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", []), ("0,1", ["0", "1"]), (" 2 , 3", ["2", "3"]), ("0,-1,1", ["0"])],
)
def test_parse_cuda_visible_devices(value: str | None, expected: list[str] | None) -> None:
    assert parse_cuda_visible_devices(value) == expected


@pytest.mark.parametrize(("n", "cvd", "expected"), TOPOLOGIES)
def test_resolve_gpus_maps_visibility_to_nvml_indices(
    n: int, cvd: str | None, expected: list[int]
) -> None:
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    with FakeNVML(fake_gpus(n)).installed():
        nvml.init()
        devices = resolve_gpus(environ=env)
    assert [d.nvml_index for d in devices] == expected
    assert [d.uuid for d in devices] == [f"GPU-fake-{i}" for i in expected]


def test_resolve_gpus_selects_cuda_ordinals_within_visible() -> None:
    with FakeNVML(fake_gpus(4)).installed():
        nvml.init()
        devices = resolve_gpus([1], environ={"CUDA_VISIBLE_DEVICES": "1,3"})
        assert [d.key for d in devices] == ["gpu:3"]
        with pytest.raises(MeterError, match="not visible"):
            resolve_gpus([2], environ={"CUDA_VISIBLE_DEVICES": "1,3"})


def test_mig_uuid_maps_to_parent_gpu_and_is_marked() -> None:
    devices = [FakeDevice("GPU-aaaa"), FakeDevice("GPU-bbbb", mig_enabled=True)]
    with FakeNVML(devices).installed():
        nvml.init()
        [dev] = resolve_gpus(environ={"CUDA_VISIBLE_DEVICES": "MIG-bbbb"})
    assert dev.nvml_index == 1 and dev.mig


def test_ordering_warning_only_for_mixed_models() -> None:
    devices = [FakeDevice("GPU-a", name="A100"), FakeDevice("GPU-b", name="H100")]
    with FakeNVML(devices).installed():
        nvml.init()
        resolved = resolve_gpus(environ={})
    assert ordering_warning(resolved, {}) is not None
    assert ordering_warning(resolved, {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) is None
    assert ordering_warning(resolved[:1], {}) is None


def _meter(
    fake: FakeNVML, clock: ManualClock, env: dict[str, str] | None = None, polled=None
) -> NvmlMeter:
    with fake.installed():
        nvml.init()
        devices = resolve_gpus(environ=env or {})
    return NvmlMeter(devices, polled=polled, clock=clock.now, sleep=clock.sleep)


@pytest.mark.parametrize(("n", "cvd", "expected"), [t for t in TOPOLOGIES if t[2]])
def test_counter_energy_per_visible_gpu(n: int, cvd: str | None, expected: list[int]) -> None:
    clock = ManualClock()
    # GPU i draws 100*(i+1) W, so each key's energy proves which device was read.
    devices = [FakeDevice(f"GPU-fake-{i}", power_w=100.0 * (i + 1)) for i in range(n)]
    fake = FakeNVML(devices, clock=clock.now)
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    meter = _meter(fake, clock, env)
    with fake.installed():
        meter.start()
        meter.begin_window("w")
        clock.advance(20.0)
        reading = meter.end_window("w")
    [m] = reading.measurements
    assert m.method == "counter" and m.scope == "gpu"
    assert m.duration_s == pytest.approx(20.0)
    assert m.energy_j_by_device == pytest.approx(
        {f"gpu:{i}": 20.0 * 100.0 * (i + 1) for i in expected}, rel=0.011
    )
    assert m.energy_j == pytest.approx(sum(m.energy_j_by_device.values()))
    assert reading.flags == [] and reading.not_measured == []


@pytest.mark.parametrize("period_s", [0.05, 0.1, 0.25])
def test_probe_finds_counter_update_period(period_s: float) -> None:
    clock = ManualClock()
    fake = FakeNVML(fake_gpus(2, counter_period_s=period_s), clock=clock.now)
    with fake.installed():
        nvml.init()
        handles = {"gpu:0": nvml.handle_by_index(0), "gpu:1": nvml.handle_by_index(1)}
        periods = probe_update_period_s(handles, clock.now, clock.sleep, budget_s=2.0)
    assert periods["gpu:0"] == pytest.approx(period_s, abs=0.006)


class _GatedClock(ManualClock):
    """A manual clock whose sleeps (the probe's) wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def sleep(self, dt_s: float) -> None:
        assert self.gate.wait(10.0), "the test never opened the gate"
        self.advance(dt_s)


def _background_meter(fake: FakeNVML, clock: ManualClock) -> NvmlMeter:
    with fake.installed():
        nvml.init()
        devices = resolve_gpus(environ={})
    return NvmlMeter(devices, clock=clock.now, sleep=clock.sleep, probe_in_background=True)


def test_background_probe_returns_at_once_and_the_period_waits_for_it() -> None:
    clock = _GatedClock()
    fake = FakeNVML(fake_gpus(1, counter_period_s=0.1), clock=clock.now)
    meter = _background_meter(fake, clock)
    with fake.installed():
        meter.start()  # returns although the probe is held at its first sleep
        assert meter._probe is not None and meter._probe.is_alive()
        clock.gate.set()
        assert meter.update_period_s["gpu:0"] == pytest.approx(0.1, abs=0.006)
        meter.stop()


def test_the_first_window_opens_after_the_background_probe() -> None:
    clock = _GatedClock()
    fake = FakeNVML(fake_gpus(1, counter_period_s=0.1), clock=clock.now)
    meter = _background_meter(fake, clock)
    with fake.installed():
        meter.start()
        threading.Timer(0.05, clock.gate.set).start()
        meter.begin_window("w")  # waits for the probe: its edge is read after the probe's
        probe_done_s = clock.now()
        clock.advance(10.0)
        reading = meter.end_window("w")
        meter.stop()
    assert probe_done_s > 1000.2  # the probe ran (three 0.1 s steps on the manual clock)
    assert reading.edges_s[0] == pytest.approx(probe_done_s)
    assert reading.edges_s[1] == pytest.approx(probe_done_s + 10.0)


def test_an_error_in_the_background_probe_surfaces_at_the_first_window() -> None:
    clock = ManualClock()
    error = FakeError(NVML_ERROR_UNKNOWN, calls=(3,))  # 1: counter check, 2: probe's first read
    device = FakeDevice("GPU-fake-0", errors={"nvmlDeviceGetTotalEnergyConsumption": error})
    fake = FakeNVML([device], clock=clock.now)
    meter = _background_meter(fake, clock)
    with fake.installed():
        meter.start()
        with pytest.raises(NvmlError):
            meter.begin_window("w")
        meter.stop()  # joins and releases NVML without raising again


def test_probe_gives_none_when_counter_does_not_move_in_budget() -> None:
    clock = ManualClock()
    fake = FakeNVML(fake_gpus(1, counter_period_s=5.0), clock=clock.now)
    with fake.installed():
        nvml.init()
        assert probe_update_period_s(
            {"gpu:0": nvml.handle_by_index(0)}, clock.now, clock.sleep, 0.5
        ) == {"gpu:0": None}


@pytest.mark.parametrize(
    ("duration_s", "severity"), [(0.05, "critical"), (0.5, "warning"), (5.0, "info"), (30.0, None)]
)
def test_short_window_flags(duration_s: float, severity: str | None) -> None:
    clock = ManualClock()
    fake = FakeNVML(fake_gpus(1), clock=clock.now)
    meter = _meter(fake, clock)
    with fake.installed():
        meter.start()
        meter.begin_window("w")
        clock.advance(duration_s)
        reading = meter.end_window("w")
    flags = [f for f in reading.flags if f.code == "short_window"]
    assert [f.severity for f in flags] == ([severity] if severity else [])


def test_window_shorter_than_update_period_can_read_zero_and_is_flagged() -> None:
    clock = ManualClock(start_s=1000.0)
    fake = FakeNVML(fake_gpus(1, counter_period_s=0.1), clock=clock.now)
    meter = _meter(fake, clock)
    with fake.installed():
        meter.start()
        clock.advance(0.1 - (fake.elapsed_s() % 0.1) + 0.001)  # just after a counter step
        meter.begin_window("w")
        clock.advance(0.05)
        reading = meter.end_window("w")
    assert reading.measurements[0].energy_j == 0.0
    assert reading.flags[0].severity == "critical"


def _timeline_for(
    fake: FakeNVML, clock: ManualClock, keys: list[str], t_from: float, t_to: float
) -> Timeline:
    """Rows as the sampler would record them from the fake's power (every 100 ms)."""
    rows = []
    t = t_from
    while t <= t_to + 1e-9:
        for k in keys:
            d = fake.devices[int(k.split(":")[1])]
            from llenergymeasure.testing import value_at

            rows.append(
                {
                    "t_s": t,
                    "device": k,
                    "power_w": value_at(d.power_w, t - fake.t0_s),
                    "power_instant_w": None,
                    "temperature_c": 40.0,
                    "sm_clock_mhz": 1980.0,
                    "throttle_mask": 0,
                }
            )
        t += 0.1
    return Timeline(rows)


def test_gpu_without_counter_is_polled_and_flagged() -> None:
    clock = ManualClock()
    devices = [
        FakeDevice("GPU-fake-0"),
        FakeDevice("GPU-fake-1", counter_supported=False, power_w=250.0),
    ]
    fake = FakeNVML(devices, clock=clock.now)
    t0 = clock.now()
    timeline = _timeline_for(fake, clock, ["gpu:0", "gpu:1"], t0, t0 + 20)
    meter = _meter(fake, clock, polled=timeline)
    with fake.installed():
        meter.start()
        assert meter.counter_supported == {"gpu:0": True, "gpu:1": False}
        meter.begin_window("w")
        clock.advance(10.0)
        reading = meter.end_window("w")
    by_method = {m.method: m for m in reading.measurements}
    assert set(by_method["counter"].energy_j_by_device) == {"gpu:0"}
    assert by_method["polled"].energy_j_by_device["gpu:1"] == pytest.approx(2500.0, rel=1e-6)
    assert "counter_missing" in {f.code for f in reading.flags}
    # never read the counter of the device that has none, except the one support probe
    assert fake.call_count("nvmlDeviceGetTotalEnergyConsumption", 1) == 1


def test_gpu_without_counter_and_no_sampler_is_not_measured() -> None:
    clock = ManualClock()
    fake = FakeNVML([FakeDevice("GPU-x", counter_supported=False)], clock=clock.now)
    meter = _meter(fake, clock)
    with fake.installed():
        meter.start()
        meter.begin_window("w")
        clock.advance(10.0)
        reading = meter.end_window("w")
    assert reading.measurements == []
    [nm] = reading.not_measured
    assert nm.device == "gpu:0" and "NOT_SUPPORTED" in nm.reason and "sampler" in nm.reason


@pytest.mark.parametrize("kind", ["reset", "wrap"])
def test_counter_going_backwards_falls_back_to_polled(kind: str) -> None:
    clock = ManualClock()
    script = {"reset_at_s": (5.0,)} if kind == "reset" else {"wrap_at_mj": 1_500_000}
    devices = [
        FakeDevice("GPU-fake-0", power_w=100.0, **script),
        FakeDevice("GPU-fake-1", power_w=100.0),
    ]
    fake = FakeNVML(devices, clock=clock.now)
    t0 = clock.now()
    meter = _meter(fake, clock, polled=_timeline_for(fake, clock, ["gpu:0", "gpu:1"], t0, t0 + 30))
    with fake.installed():
        meter.start()
        meter.begin_window("w")
        clock.advance(10.0)
        reading = meter.end_window("w")
    by_method = {m.method: m for m in reading.measurements}
    assert set(by_method["counter"].energy_j_by_device) == {"gpu:1"}
    assert by_method["polled"].energy_j_by_device["gpu:0"] == pytest.approx(1000.0, rel=1e-6)
    assert [f.code for f in reading.flags if f.code == "counter_reset"] == ["counter_reset"]


def test_edge_read_error_falls_back_for_that_window_only() -> None:
    clock = ManualClock()
    # support probe = call 1, period probe = calls 2.., begin edge ok; fail one end-edge read.
    fake = FakeNVML(fake_gpus(1), clock=clock.now)
    meter = _meter(fake, clock)
    with fake.installed():
        meter.start()
        n = fake.call_count("nvmlDeviceGetTotalEnergyConsumption", 0)
        fake.devices[0] = FakeDevice(
            "GPU-fake-0",
            errors={"nvmlDeviceGetTotalEnergyConsumption": FakeError(NVML_ERROR_UNKNOWN, (n + 2,))},
        )
        meter.begin_window("a")
        clock.advance(10.0)
        bad = meter.end_window("a")
        meter.begin_window("b")
        clock.advance(10.0)
        good = meter.end_window("b")
    assert bad.measurements == [] and "read failed" in bad.not_measured[0].reason
    assert good.measurements[0].method == "counter"


def test_mig_is_flagged() -> None:
    clock = ManualClock()
    fake = FakeNVML([FakeDevice("GPU-m", mig_enabled=True)], clock=clock.now)
    meter = _meter(fake, clock)
    with fake.installed():
        meter.start()
        meter.begin_window("w")
        clock.advance(12.0)
        reading = meter.end_window("w")
    assert [f.code for f in reading.flags] == ["mig"]


def test_named_windows_overlap_and_misuse_raises() -> None:
    clock = ManualClock()
    fake = FakeNVML(fake_gpus(1, power_w=100.0), clock=clock.now)
    meter = _meter(fake, clock)
    with fake.installed():
        with pytest.raises(MeterError, match="before start"):
            meter.begin_window("x")
        meter.start()
        meter.begin_window("outer")
        clock.advance(10.0)
        meter.begin_window("inner")
        with pytest.raises(MeterError, match="already open"):
            meter.begin_window("inner")
        clock.advance(10.0)
        inner = meter.end_window("inner")
        outer = meter.end_window("outer")
        with pytest.raises(MeterError, match="no open window"):
            meter.end_window("outer")
        meter.stop()
    assert inner.measurements[0].energy_j == pytest.approx(1000.0, rel=0.02)
    assert outer.measurements[0].energy_j == pytest.approx(2000.0, rel=0.02)
    assert fake.init_count == 1  # the resolve_gpus init in _meter; the meter's own was released
