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


_BASELINE_STATE_SCRIPT = """
import json, sys, tempfile, time
from pathlib import Path
from llenergymeasure.core.energy import BaselineSettings, EnergySession

cache = Path(tempfile.mkdtemp()) / "baseline.json"

def baseline():
    settings = BaselineSettings(duration_s=2.0, cache_path=cache, cache_ttl_s=3600.0)
    with EnergySession("nvml", gpu_indices=[0], baseline=settings) as session:
        return session.measure_baseline().model_dump(mode="json")

before = baseline()
import torch
a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
for _ in range(50):
    a @ a
torch.cuda.synchronize()
after = baseline()
print(json.dumps({"before": before, "after": after}))
"""


def test_idle_baseline_records_the_context_state() -> None:
    """A fresh process: the baseline before any CUDA context and the one after it opened one
    are cached under different keys, and NVML counts the new context.

    Placed first in this module so that pytest's own process has no context yet; if some
    process does hold one, both baselines are "|context" and the second is the cached first.
    """
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _BASELINE_STATE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    before, after = result["before"], result["after"]
    assert after["key"].endswith("|context")
    if before["compute_processes"] == 0:
        assert before["key"].endswith("|no-context")
        assert not after["cached"]  # measured afresh, not the no-context value reused
        assert after["compute_processes"] >= 1
        assert after["idle_power_w"] > before["idle_power_w"]  # full clocks with a context
    else:  # another process holds a context: same state, so the cached value is reused
        assert before["key"] == after["key"] and after["cached"]
    for b in (before, after):
        assert b["sm_clock_mhz"] > 0 and b["temperature_c"] > 0
        assert b["power_trend_pct"] is not None and b["settled"] is not None


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
