"""The energy layer against a real NVIDIA GPU (run with ``pytest -m gpu tests/gpu``)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llenergymeasure.core.energy import (
    EnergySession,
    NvmlSampleSource,
    TelemetrySampler,
    probe_gpus,
)
from llenergymeasure.core.environment import collect_environment

pytestmark = pytest.mark.gpu

_GPUS, _WHY = probe_gpus()
if not _GPUS:
    pytest.skip(f"needs an NVIDIA GPU with NVML: {_WHY}", allow_module_level=True)


@pytest.fixture(scope="module")
def torch_cuda() -> Any:
    """torch with CUDA, or skip."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch cannot see a CUDA device")
    return torch


def _matmul_for(torch: Any, seconds: float) -> None:
    """Keep GPU 0 busy with bf16 matmuls."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def _raw_counter_mj(nvml_index: int) -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        return int(
            pynvml.nvmlDeviceGetTotalEnergyConsumption(
                pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
            )
        )
    finally:
        pynvml.nvmlShutdown()


def test_meter_matches_raw_counter_and_polled_cross_check(torch_cuda: Any) -> None:
    sync = torch_cuda.cuda.synchronize
    _matmul_for(torch_cuda, 1.0)  # clocks up before measuring
    with EnergySession("nvml", gpu_indices=[0]) as session:
        assert session.plan is not None and session.plan.nvml_meter is not None
        index = session.plan.gpus[0].nvml_index
        period_s = session.plan.nvml_meter.update_period_s[f"gpu:{index}"]
        assert period_s is not None and 0.005 < period_s < 1.0
        session.begin_window("load", sync=sync)
        raw0 = _raw_counter_mj(index)
        _matmul_for(torch_cuda, 5.0)
        sync()
        raw1 = _raw_counter_mj(index)
        report = session.end_window("load")
    raw_j = (raw1 - raw0) / 1000.0
    assert report.gpu_energy_j is not None and report.measurements[0].method == "counter"
    # The two reads are a few ms apart; a counter step may land between them at each edge.
    power_w = report.gpu_energy_j / report.duration_s
    allowed_j = 0.01 * raw_j + 2 * period_s * power_w
    assert abs(report.gpu_energy_j - raw_j) <= allowed_j
    assert report.polled_gpu_energy_j is not None and report.counter_vs_polled_pct is not None
    assert abs(report.counter_vs_polled_pct) < 15.0
    assert report.thermal is not None and report.thermal.sample_count >= 30


def test_sampler_reads_real_nvml_on_the_parent_clock() -> None:
    index = _GPUS[0].nvml_index
    sampler = TelemetrySampler(NvmlSampleSource((index,)), interval_s=0.1)
    t0 = time.monotonic()
    sampler.start()
    time.sleep(1.0)
    sampler.stop()
    t1 = time.monotonic()
    rows = sampler.timeline.rows
    assert 8 <= len(rows) <= 20
    assert all(t0 <= r["t_s"] <= t1 for r in rows)
    assert all(r["power_w"] is not None and 5.0 < r["power_w"] < 2000.0 for r in rows)
    assert all(r["temperature_c"] is not None for r in rows)
    assert [r["t_s"] for r in rows] == sorted(r["t_s"] for r in rows)


def test_environment_snapshot_sees_the_gpu() -> None:
    env = collect_environment()
    assert env.nvml_available and env.gpu_count >= 1
    assert env.driver_version and env.gpus[0].name and env.gpus[0].power_limit_w
