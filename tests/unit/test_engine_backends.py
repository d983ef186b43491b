"""The vLLM and TensorRT-LLM backends over stand-in engine modules (neither engine is
installed here): what they hand the engine, and the shared life cycle of EngineBackend."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.backends.protocol import InferenceBackend
from llenergymeasure.datasets.types import Prompt
from llenergymeasure.exceptions import BackendError

OUTPUT_TOKENS = 3


class StandInEngine:
    """Records how it was built and answers generate with OUTPUT_TOKENS tokens a prompt."""

    instances: list[StandInEngine]
    fail_with: Exception | None = None

    def __init__(self, **kwargs: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.kwargs = kwargs
        self.calls: list[tuple[list[Any], Any, bool]] = []
        self.shut_down = False
        self.instances.append(self)

    def generate(self, prompts: list[Any], sampling: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append((list(prompts), sampling, use_tqdm))
        done = types.SimpleNamespace(token_ids=list(range(OUTPUT_TOKENS)))
        return [types.SimpleNamespace(outputs=[done], metrics=None) for _ in prompts]

    def shutdown(self) -> None:
        self.shut_down = True


class StandInSampling:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@dataclasses.dataclass
class Engine:
    name: str  # the backend's
    module: Any  # the stand-in engine package
    backend: Any


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec finds it
    engine = type("LLM", (StandInEngine,), {"instances": []})
    module.LLM = engine  # type: ignore[attr-defined]
    module.SamplingParams = StandInSampling  # type: ignore[attr-defined]
    return module


@pytest.fixture(
    params=[("vllm", "vllm", "VLLMBackend"), ("tensorrt", "tensorrt_llm", "TensorRTBackend")]
)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A backend instance over its stand-in engine module."""
    name, vendor, cls = request.param
    module = _module(vendor)
    monkeypatch.setitem(sys.modules, vendor, module)
    backend_module = f"llenergymeasure.core.backends.{name}"
    monkeypatch.delitem(sys.modules, backend_module, raising=False)
    yield Engine(name, module, getattr(importlib.import_module(backend_module), cls)())
    sys.modules.pop(backend_module, None)  # the next import sees the real (absent) engine


def _config(name: str, **kw: Any) -> ExperimentConfig:
    return ExperimentConfig(model="tiny-llama", backend=name, **kw)


PROMPTS = [Prompt(id=str(i), text=f"prompt number {i}") for i in range(10)]


def test_initialize_starts_the_engine_on_a_random_model_dir(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    backend.initialize(_config(name), PROMPTS)
    [llm] = module.LLM.instances
    assert llm.kwargs["load_format"] == "dummy" and llm.kwargs["skip_tokenizer_init"] is True
    assert llm.kwargs["dtype"] == "bfloat16"
    config_json = json.loads((Path(llm.kwargs["model"]) / "config.json").read_text())
    assert config_json["architectures"] == ["LlamaForCausalLM"]
    assert backend._sampling.kwargs["max_tokens"] == 128


def test_tokenize_gives_token_ids_and_the_output_length(engine: Engine) -> None:
    name, backend = engine.name, engine.backend
    backend.initialize(_config(name, max_output_tokens=50), PROMPTS)
    same = [Prompt(id=str(i), text="x y z", target_output_tokens=7) for i in range(3)]
    prepared = backend.tokenize(same)
    assert prepared.max_new_tokens == 7 and prepared.n_requests == 3
    assert all(isinstance(t, int) for t in prepared.batches[0].payload[0])
    sampling = backend._sampling.kwargs
    assert sampling["max_tokens"] == 7 and sampling["min_tokens"] == 7  # ignore_eos
    assert sampling["detokenize"] is False and sampling["temperature"] == 0.0


def test_warmup_generates_for_the_first_eight_prompts(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    backend.initialize(_config(name), PROMPTS)
    prepared = backend.tokenize(PROMPTS)
    assert backend.warmup_step(prepared) >= 0.0
    output = backend.run_inference(prepared)
    [llm] = module.LLM.instances
    (warm, _, warm_tqdm), (measured, _, _) = llm.calls
    assert len(warm) == 8 and len(measured) == 10 and warm_tqdm is False
    assert output.n_requests == 10 and output.output_tokens == 10 * OUTPUT_TOKENS
    assert output.timing_method == "e2e_only" and output.ttft_not_measured_reason


def test_sampling_settings_reach_the_engine(engine: Engine) -> None:
    name, backend = engine.name, engine.backend
    decoder = {"strategy": "sample", "temperature": 0.7, "top_p": 0.9, "ignore_eos": False}
    config = _config(name, decoder=decoder, passthrough_kwargs={"top_p": 0.5})
    backend.initialize(config, PROMPTS)
    sampling = backend._sampling.kwargs
    assert sampling["temperature"] == 0.7 and sampling["seed"] == config.random_seed
    assert sampling["top_p"] == 0.5  # passthrough wins
    assert "top_k" not in sampling


@pytest.mark.parametrize(("gpus", "expected"), [(None, [0, 1]), ([3, 5, 7], [3, 5])])
def test_device_indices_are_the_first_tp_x_pp_gpus(
    engine: Engine, gpus: list[int] | None, expected: list[int]
) -> None:
    name, backend = engine.name, engine.backend
    section = {"vllm": {"tensor_parallel_size": 2}, "tensorrt": {"tp_size": 2}}[name]
    backend.initialize(_config(name, gpus=gpus, **{name: section}), PROMPTS)
    assert backend.device_indices() == expected


def test_used_before_initialize_says_so(engine: Engine) -> None:
    name, backend = engine.name, engine.backend
    with pytest.raises(BackendError, match=f"{name} backend used before initialize"):
        backend.tokenize(PROMPTS)
    assert isinstance(backend, InferenceBackend)
    caps = backend.get_runtime_capabilities()
    assert caps.cuda_management == "backend" and not caps.supports_streaming_timestamps
    assert caps.notes and backend.validate_config(_config(name))


def test_cleanup_drops_the_engine_and_can_run_twice(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    backend.initialize(_config(name), PROMPTS)
    [llm] = module.LLM.instances
    backend.cleanup()
    backend.cleanup()
    assert backend._llm is None
    assert llm.shut_down is (name == "tensorrt")  # vLLM's workers exit with the engine


def test_generate_errors_are_backend_errors(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    backend.initialize(_config(name), PROMPTS)
    prepared = backend.tokenize(PROMPTS)
    module.LLM.generate = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("engine died"))
    with pytest.raises(BackendError, match="generate failed: engine died"):
        backend.run_inference(prepared)


def test_engine_start_failure(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    module.LLM.fail_with = RuntimeError("no GPU")
    if name == "tensorrt":
        with pytest.raises(BackendError, match="could not build/load the engine: no GPU"):
            backend.initialize(_config(name), PROMPTS)
    else:  # vLLM's own error is passed on as it is
        with pytest.raises(RuntimeError, match="no GPU"):
            backend.initialize(_config(name), PROMPTS)
