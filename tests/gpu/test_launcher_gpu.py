"""The launcher on real GPUs (run with ``pytest -m gpu tests/gpu``): one worker per GPU,
routed by UUID, the parent measuring exactly the GPUs the workers ran on."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure import run_experiment
from llenergymeasure.core.energy import probe_gpus
from llenergymeasure.domain.results import LaunchRecord, RawProcessResult

pytestmark = pytest.mark.gpu

_GPUS, _WHY = probe_gpus()
if not _GPUS:
    pytest.skip(f"needs an NVIDIA GPU with NVML: {_WHY}", allow_module_level=True)

FAST = {
    "model": "tiny-llama",
    "precision": "fp32",
    "device": "cuda",
    "n": 16,
    "max_output_tokens": 16,
    "warmup.n_warmup": 1,
    "baseline.enabled": False,
    "telemetry.save_timeseries": False,
}


def _raws(run_dir: Path, n: int) -> list[RawProcessResult]:
    return [
        RawProcessResult.model_validate_json((run_dir / f"raw/process_{i}.json").read_bytes())
        for i in range(n)
    ]


def test_one_worker_runs_on_its_gpu_and_the_parent_measures_it(tmp_path: Path) -> None:
    result = run_experiment(
        results_dir=tmp_path, **FAST, **{"pytorch.num_processes": 1, "gpus": [0]}
    )
    assert result.run_dir is not None and not result.partial
    run_dir = Path(result.run_dir)
    (raw,) = _raws(run_dir, 1)
    assert raw.device == "cuda:0" and raw.gpu_devices == [_GPUS[0].key]
    assert raw.cuda_visible_devices == _GPUS[0].uuid  # routed by UUID
    assert raw.energy is not None and raw.energy.gpu_energy_j
    energy = result.energy
    assert energy is not None and energy.gpu_energy_j is not None and energy.gpu_energy_j > 0
    assert {m.method for m in energy.measurements if m.scope == "gpu"} == {"counter"}
    assert [d.device for d in result.device_breakdown if d.scope == "gpu"] == [_GPUS[0].key]
    launch = LaunchRecord.model_validate_json((run_dir / "raw/launch.json").read_bytes())
    assert [p.status for p in launch.processes] == ["completed"]
    m = result.metrics
    assert m is not None and m.tokens.output_tokens == 16 * 16


@pytest.mark.skipif(len(_GPUS) < 2, reason="needs two GPUs")
def test_two_workers_two_gpus_energy_of_both(tmp_path: Path) -> None:
    result = run_experiment(
        results_dir=tmp_path, **FAST, **{"pytorch.num_processes": 2, "gpus": [0, 1]}
    )
    assert result.run_dir is not None and not result.partial
    raws = _raws(Path(result.run_dir), 2)
    assert [r.gpu_devices for r in raws] == [[_GPUS[0].key], [_GPUS[1].key]]
    energy = result.energy
    assert energy is not None
    by_device = energy.measurements[0].energy_j_by_device
    assert set(by_device) == {_GPUS[0].key, _GPUS[1].key} and all(v > 0 for v in by_device.values())
    assert "device_measured_twice" not in {w.code for w in result.warnings}
