"""The fake NVML itself, and the quality-flag thresholds."""

from __future__ import annotations

import pickle

import pynvml
import pytest

from llenergymeasure.core.energy._nvml import NvmlError, NvmlNotSupported, nvml
from llenergymeasure.core.energy.quality import MIN_SAMPLES, low_sample_flag, short_window_flags
from llenergymeasure.testing import (
    NVML_ERROR_UNKNOWN,
    FakeDevice,
    FakeError,
    FakeNVML,
    ManualClock,
    integral_j,
    value_at,
)


def test_counter_steps_at_its_period_and_matches_power() -> None:
    d = FakeDevice(
        "GPU-a", power_w=((0.0, 100.0), (1.0, 200.0)), counter_period_s=0.1, counter_start_mj=0
    )
    assert d.energy_mj(0.05) == 0
    assert d.energy_mj(0.1) == 10_000
    assert d.energy_mj(0.19) == 10_000
    assert d.energy_mj(1.5) == 100_000 + 100_000
    assert integral_j(d.power_w, 0.0, 1.5) == pytest.approx(200.0)
    assert value_at(d.power_w, 0.99) == 100.0 and value_at(d.power_w, 1.0) == 200.0


def test_reset_and_wrap_make_the_counter_go_backwards() -> None:
    reset = FakeDevice("GPU-a", reset_at_s=(2.0,), counter_start_mj=5_000_000)
    assert reset.energy_mj(1.9) > reset.energy_mj(2.5)
    assert reset.energy_mj(2.0) == 0
    wrap = FakeDevice("GPU-b", wrap_at_mj=1_000_000, counter_start_mj=900_000)
    assert wrap.energy_mj(2.0) < wrap.energy_mj(0.5)


def test_scripted_errors_raise_real_nvml_errors_through_the_adapter() -> None:
    errors = {"nvmlDeviceGetPowerUsage": FakeError(NVML_ERROR_UNKNOWN, calls=(2,))}
    fake = FakeNVML([FakeDevice("GPU-a", counter_supported=False, errors=errors)])
    with pytest.raises(pynvml.NVMLError):
        fake.nvmlDeviceGetTotalEnergyConsumption(fake.nvmlDeviceGetHandleByIndex(0))
    with fake.installed():
        h = nvml.handle_by_index(0)
        with pytest.raises(NvmlNotSupported):
            nvml.total_energy_mj(h)
        assert nvml.power_w(h) == 100.0
        with pytest.raises(NvmlError) as err:
            nvml.power_w(h)
        assert not isinstance(err.value, NvmlNotSupported)
        assert nvml.power_w(h) == 100.0


def test_fake_pickles_with_its_clock() -> None:
    clock = ManualClock(50.0)
    fake = FakeNVML([FakeDevice("GPU-a")], clock=clock.now)
    clock.advance(3.0)
    copy = pickle.loads(pickle.dumps(fake))
    assert copy.elapsed_s() == pytest.approx(3.0)


def test_low_sample_threshold() -> None:
    assert low_sample_flag(MIN_SAMPLES, 1.0) is None
    flag = low_sample_flag(MIN_SAMPLES - 1, 1.0)
    assert flag is not None and flag.code == "low_sample_count"


def test_short_window_without_known_period_uses_recommended_length() -> None:
    assert [f.severity for f in short_window_flags(3.0, [])] == ["info"]
    assert short_window_flags(12.0, []) == []
