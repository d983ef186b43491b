"""The launcher's pure parts and the checks before it: sharding, GPU routing, which GPUs a
worker's energy is charged to, pre-flight GPU counts, and the config rules."""

from __future__ import annotations

import sys

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.energy.nvml import GpuDevice
from llenergymeasure.datasets.types import Prompt
from llenergymeasure.exceptions import ConfigError, PreflightError
from llenergymeasure.orchestration.launcher import (
    ProcessPlan,
    charged_devices,
    cpu_threads_per_worker,
    plan_processes,
    shard_prompts,
    worker_config,
)
from llenergymeasure.orchestration.preflight import run_preflight
from llenergymeasure.testing import FakeDevice, FakeNVML, fake_gpus

GPUS = [GpuDevice(i, f"GPU-{i}{i}{i}", "H200") for i in range(4)]


def _config(**fields: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"model": "tiny-llama", "n": 8, **fields})


def test_round_robin_shards_partition_the_prompts_deterministically() -> None:
    prompts = [Prompt(id=str(i), text=f"p{i}") for i in range(10)]
    shards = [shard_prompts(prompts, i, 3) for i in range(3)]
    assert [[p.id for p in s] for s in shards] == [
        ["0", "3", "6", "9"],
        ["1", "4", "7"],
        ["2", "5", "8"],
    ]
    assert sorted(p.id for s in shards for p in s) == sorted(p.id for p in prompts)
    assert shard_prompts(prompts, 1, 3) == shards[1]  # same input, same shard


def test_one_gpu_per_worker_named_by_uuid() -> None:
    plans = plan_processes(_config(pytorch={"num_processes": 2}), 2, GPUS)
    assert [(p.parent_ordinals, p.gpu_devices, p.cuda_visible_devices) for p in plans] == [
        ((0,), ("gpu:0",), "GPU-000"),
        ((1,), ("gpu:1",), "GPU-111"),
    ]


def test_gpus_chooses_the_devices_and_their_order() -> None:
    config = _config(gpus=[3, 1], pytorch={"num_processes": 2})
    plans = plan_processes(config, 2, GPUS)
    assert [p.gpu_devices for p in plans] == [("gpu:3",), ("gpu:1",)]
    assert worker_config(config, plans[0]).gpus is None  # the worker sees only its GPU
    assert worker_config(config, plans[0]).model_dump(exclude={"gpus"}) == config.model_dump(
        exclude={"gpus"}
    )


def test_device_map_gives_the_single_worker_every_candidate() -> None:
    config = _config(gpus=[0, 2], pytorch={"num_processes": 1, "device_map": "auto"})
    (plan,) = plan_processes(config, 1, GPUS)
    assert plan.parent_ordinals == (0, 2) and plan.cuda_visible_devices == "GPU-000,GPU-222"


def test_cpu_workers_see_no_gpu() -> None:
    plans = plan_processes(_config(device="cpu"), 3, GPUS)
    assert [p.cuda_visible_devices for p in plans] == ["", "", ""]
    assert all(not p.parent_ordinals for p in plans)
    # no GPU visible to NVML: nothing assigned, nothing measured, environment inherited
    plans = plan_processes(_config(), 2, [])
    assert [(p.parent_ordinals, p.cuda_visible_devices) for p in plans] == [((), None)] * 2


def test_more_workers_than_gpus_is_refused_naming_both_numbers() -> None:
    with pytest.raises(PreflightError, match="num_processes is 3 but only 2 GPU"):
        plan_processes(_config(gpus=[0, 1], pytorch={"num_processes": 3}), 3, GPUS)


def test_mig_entries_are_passed_on_as_given() -> None:
    mig = [GpuDevice(0, "GPU-000", "H200", mig=True)]
    (plan,) = plan_processes(_config(), 1, mig, "MIG-abc")
    assert plan.cuda_visible_devices == "MIG-abc"


def test_energy_is_charged_to_the_gpus_a_worker_occupies() -> None:
    plan = ProcessPlan(0, parent_ordinals=(2, 3), gpu_devices=("gpu:2", "gpu:3"))
    assert charged_devices(plan, [1], _config()) == ([3], ["gpu:3"])  # a device map on one
    assert charged_devices(plan, [0, 1], _config()) == ([2, 3], ["gpu:2", "gpu:3"])
    assert charged_devices(plan, [5], _config()) == ([], [])  # not one of its GPUs
    # nothing reported (a CPU build of torch): the assigned GPUs only if gpus: asked for them
    assert charged_devices(plan, [], _config(gpus=[2, 3])) == ([2, 3], ["gpu:2", "gpu:3"])
    assert charged_devices(plan, [], _config()) == ([], [])
    assert charged_devices(plan, None, _config(device="cpu", gpus=None)) == ([], [])


def test_preflight_names_requested_and_visible_gpu_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with FakeNVML(fake_gpus(3)).installed():
        with pytest.raises(PreflightError) as info:
            run_preflight(_config(gpus=[0, 1, 2]))
        text = "\n".join(info.value.problems)
        assert "gpus lists 3 GPU(s) but only 2 are visible" in text
        assert "CUDA_VISIBLE_DEVICES='0,1'" in text
        with pytest.raises(PreflightError) as info:
            run_preflight(_config(pytorch={"num_processes": 3}))
        assert "num_processes is 3 but only 2 GPU(s)" in "\n".join(info.value.problems)
        with pytest.raises(PreflightError) as info:
            run_preflight(_config(gpus=[1], pytorch={"num_processes": 2}))
        assert "only 1 GPU(s) are listed in gpus: [1]" in "\n".join(info.value.problems)
        assert run_preflight(_config(pytorch={"num_processes": 2})).device == "cuda"
        # CPU processes are not limited by the GPU count
        assert run_preflight(_config(device="cpu", pytorch={"num_processes": 3})).device == "cpu"


def test_preflight_with_one_big_gpu_passes_num_processes_one() -> None:
    with FakeNVML([FakeDevice("GPU-a", memory_total_mb=141_000.0)]).installed():
        assert run_preflight(_config(pytorch={"num_processes": 1})).device == "cuda"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pytorch": {"num_processes": 2, "device_map": "auto"}}, "cannot be combined"),
        ({"n": 3, "pytorch": {"num_processes": 4}}, "more than the 3 prompts"),
    ],
)
def test_config_rules_for_num_processes(fields: dict[str, object], message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        _config(**fields)


def test_one_worker_gets_this_process_torch_threads_several_cpu_workers_split_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker runs with the threads the direct path would use here (a caller's
    torch.set_num_threads included); several CPU workers share the physical cores."""
    import psutil
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cpu_threads_per_worker(1, on_cpu=True) == 1
        assert cpu_threads_per_worker(1, on_cpu=False) == 1  # GPU runs too
    finally:
        torch.set_num_threads(before)
    cores = psutil.cpu_count(logical=False) or 1
    assert cpu_threads_per_worker(2, on_cpu=True) == max(1, cores // 2)
    assert cpu_threads_per_worker(2, on_cpu=False) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads_per_worker(2, on_cpu=True) is None
    monkeypatch.setitem(sys.modules, "torch", None)  # torch not imported here: its default
    assert cpu_threads_per_worker(1, on_cpu=True) is None
