"""TensorRT-LLM backend (the ``tensorrt_llm.LLM`` API).

NEVER RUN ON AN ENGINE: TensorRT-LLM cannot be installed where this project is developed and
tested (the registry holds only a stub that fetches from NVIDIA's own index, and its releases
pin torch 2.9 / transformers 4.57). Its config translation, engine cache and result
assembly are tested against a stand-in module at the import seam
(``llenergymeasure.testing.stand_in_tensorrt_llm``); no GPU run has exercised it. It follows
the documented LLM API (``LLM(model, dtype, tensor_parallel_size, pipeline_parallel_size,
max_batch_size, max_seq_len, max_num_tokens, kv_cache_config, quant_config,
skip_tokenizer_init, load_format="dummy")``, ``LLM.save(dir)``,
``SamplingParams(max_tokens, min_tokens, ignore_eos, ...)``). Importing this module without
TensorRT-LLM raises BackendNotInstalledError with the install command.

**Engine cache.** Building an engine takes minutes, so built engines are saved under
``tensorrt.engine_cache_dir`` (default: the user cache directory,
``.../llenergymeasure/tensorrt-engines``) in a directory named by the hash of the
engine-relevant settings (:func:`engine_cache_key`: model, weights, precision, parallelism,
build limits, quantisation, beam width, TensorRT-LLM version) and loaded from there on the
next run with the same settings (``backend_details["engine_cache"]`` says which happened).
Runtime-only settings (KV-cache memory fraction, sampling) do not change the key. Engines
are built or loaded inside ``initialize`` (before the window).

Timing: offline ``generate`` does not stream; only end-to-end window time and token counts
are recorded (``timing_method="e2e_only"``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.core.backends._engine_common import (
    PRECISION_DTYPES,
    EngineBackend,
    engine_timing,
    require_module,
    sampling_kwargs,
)
from llenergymeasure.core.backends.protocol import InferenceOutput, PreparedBatches
from llenergymeasure.exceptions import BackendError

require_module("tensorrt_llm", "tensorrt")

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig

NO_STREAM_REASON = (
    "TensorRT-LLM offline generate does not stream tokens to the caller: TTFT/ITL are not "
    "measured, only end-to-end window time"
)
_QUANT_ALGOS = {  # ssot precision / tensorrt.quantization -> QuantAlgo member name
    "fp8": "FP8",
    "int8": "W8A16",
    "int4": "W4A16_AWQ",
    "int8_wo": "W8A16",
    "int4_wo": "W4A16",
    "int4_awq": "W4A16_AWQ",
    "w8a8_sq": "W8A8_SQ_PER_CHANNEL",
}


class TensorRTBackend(EngineBackend):
    """The ``tensorrt`` backend (TensorRT-LLM manages its own CUDA context and MPI workers)."""

    name = "tensorrt"
    CAPABILITY_NOTES = (NO_STREAM_REASON,)

    def validate_config(self, config: ExperimentConfig) -> list[str]:
        """Warnings: no per-token timing."""
        return [NO_STREAM_REASON]

    def __init__(self) -> None:
        super().__init__()
        self._details: dict[str, Any] = {}

    def _create_engine(self, config: ExperimentConfig, model: str, random_weights: bool) -> Any:
        """Load the cached engine for these settings, or build it and save it there."""
        from tensorrt_llm import LLM

        key = engine_cache_key(config, random_weights)
        path = engine_cache_root(config) / key
        cached = (path / CACHE_MARKER).is_file()
        kwargs = (
            runtime_kwargs(config, path) if cached else llm_kwargs(config, model, random_weights)
        )
        start = time.perf_counter()
        try:
            llm = LLM(**kwargs)
        except Exception as e:  # vendor boundary
            raise BackendError(f"TensorRT-LLM could not build/load the engine: {e}") from e
        status = (
            "loaded"
            if cached
            else save_engine(llm, path, engine_key_fields(config, random_weights))
        )
        self._details = {
            "tensorrt_llm_version": tensorrt_llm_version(),
            "engine_cache": {"key": key, "path": str(path), "status": status},
            "engine_start_s": time.perf_counter() - start,
        }
        return llm

    def _sampling_params(self, config: ExperimentConfig, max_new_tokens: int) -> Any:
        """``tensorrt_llm.SamplingParams`` for the decoder settings."""
        from tensorrt_llm import SamplingParams

        decoder = config.decoder
        engine: dict[str, Any] = {}
        if decoder.ignore_eos:
            engine["min_tokens"] = max_new_tokens
        elif decoder.min_new_tokens:
            engine["min_tokens"] = decoder.min_new_tokens
        if decoder.strategy == "sample":
            engine["temperature"] = decoder.temperature if decoder.temperature is not None else 1.0
            engine["seed"] = config.random_seed
        else:
            engine["temperature"] = 0.0
        if decoder.strategy == "beam_search":
            engine["use_beam_search"] = True
            engine["n"] = engine["best_of"] = decoder.num_beams or 4
        return SamplingParams(**sampling_kwargs(config, max_new_tokens, engine))

    def _parallel_sizes(self, config: ExperimentConfig) -> tuple[int | None, int | None]:
        section = config.tensorrt
        return (section.tp_size, section.pp_size) if section else (None, None)

    def run_inference(self, prepared: PreparedBatches) -> InferenceOutput:
        """All prompts in one ``generate`` call (in-flight batching inside the engine)."""
        batch = prepared.batches[0]
        start = time.perf_counter()
        outputs = self._generate(batch.payload)
        duration = time.perf_counter() - start
        token_ids = [list(o.outputs[0].token_ids) for o in outputs]
        timings = [
            engine_timing(start, n_in, len(ids), None, None)
            for ids, n_in in zip(token_ids, batch.input_tokens, strict=True)
        ]
        return InferenceOutput(
            timings=timings,
            n_batches=1,
            device="cuda",
            timing_method="e2e_only",
            duration_s=duration,
            ttft_not_measured_reason=NO_STREAM_REASON,
            output_token_ids=token_ids,
            backend_details=dict(self._details),
        )

    def _generate(self, token_lists: list[list[int]]) -> list[Any]:
        """LLM.generate on token-id prompts."""
        try:
            return list(self._llm.generate(token_lists, self._sampling, use_tqdm=False))
        except Exception as e:  # vendor boundary
            raise BackendError(f"TensorRT-LLM generate failed: {e}") from e

    def _shutdown(self, engine: Any) -> None:
        """Shut the engine's workers down."""
        if hasattr(engine, "shutdown"):
            engine.shutdown()


# ---- engine cache --------------------------------------------------------------------------
CACHE_MARKER = "llem-engine.json"
#: tensorrt: fields that are baked into a built engine (the KV-cache fraction is not).
ENGINE_FIELDS = (
    "tp_size",
    "pp_size",
    "max_batch_size",
    "max_seq_len",
    "max_input_len",
    "max_num_tokens",
    "quantization",
)


def tensorrt_llm_version() -> str | None:
    """The installed TensorRT-LLM version (package metadata, else the module's own)."""
    for dist in ("tensorrt_llm", "tensorrt-llm"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    import tensorrt_llm

    version = getattr(tensorrt_llm, "__version__", None)
    return str(version) if version is not None else None


def engine_key_fields(config: ExperimentConfig, random_weights: bool) -> dict[str, Any]:
    """What a built engine depends on (the cache key is their hash)."""
    section = config.tensorrt
    beams = (config.decoder.num_beams or 4) if config.decoder.strategy == "beam_search" else 1
    return {
        "model": config.model,
        "weights": "random" if random_weights else "pretrained",
        "precision": config.precision,
        "max_beam_width": beams,
        "tensorrt_llm": tensorrt_llm_version(),
        **{f: getattr(section, f) if section else None for f in ENGINE_FIELDS},
    }


def engine_cache_key(config: ExperimentConfig, random_weights: bool) -> str:
    """16 hex characters of the SHA-256 of :func:`engine_key_fields`."""
    from llenergymeasure.config.hashing import sha256_of

    return sha256_of(engine_key_fields(config, random_weights))[:16]


def engine_cache_root(config: ExperimentConfig) -> Path:
    """``tensorrt.engine_cache_dir``, else ``<user cache>/llenergymeasure/tensorrt-engines``."""
    section = config.tensorrt
    if section is not None and section.engine_cache_dir:
        return Path(section.engine_cache_dir).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llenergymeasure")) / "tensorrt-engines"


def save_engine(llm: Any, path: Path, fields: dict[str, Any]) -> str:
    """Save a freshly built engine under ``path`` (atomically: temp dir, then rename)."""
    if not hasattr(llm, "save"):
        return "built (this TensorRT-LLM has no LLM.save: not cached)"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        llm.save(str(tmp))
        (tmp / CACHE_MARKER).write_text(json.dumps(fields, indent=2, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:  # another process saved it first, or the disk is full
        shutil.rmtree(tmp, ignore_errors=True)
        return f"built (not cached: {e})"
    except Exception as e:  # vendor boundary: a failed save must not fail the run
        shutil.rmtree(tmp, ignore_errors=True)
        return f"built (saving failed: {e})"
    return "built and saved"


def runtime_kwargs(config: ExperimentConfig, engine_dir: Path) -> dict[str, Any]:
    """Keyword arguments that load a saved engine: its directory and the runtime settings."""
    kwargs: dict[str, Any] = {"model": str(engine_dir), "skip_tokenizer_init": True}
    section = config.tensorrt
    if section is not None and section.kv_cache_free_gpu_memory_fraction is not None:
        from tensorrt_llm.llmapi import KvCacheConfig

        kwargs["kv_cache_config"] = KvCacheConfig(
            free_gpu_memory_fraction=section.kv_cache_free_gpu_memory_fraction
        )
    return kwargs


def llm_kwargs(config: ExperimentConfig, model: str, random_weights: bool) -> dict[str, Any]:
    """Keyword arguments for ``tensorrt_llm.LLM`` (building an engine)."""
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": PRECISION_DTYPES.get(config.precision, "auto"),
        "skip_tokenizer_init": True,
    }
    if random_weights:
        kwargs["load_format"] = "dummy"
    if config.decoder.strategy == "beam_search":  # the engine's beam limit must match
        kwargs["max_beam_width"] = config.decoder.num_beams or 4
    section = config.tensorrt
    if section is not None:
        simple = {
            "tp_size": "tensor_parallel_size",
            "pp_size": "pipeline_parallel_size",
            "max_batch_size": "max_batch_size",
            "max_seq_len": "max_seq_len",
            "max_input_len": "max_input_len",
            "max_num_tokens": "max_num_tokens",
        }
        kwargs |= {arg: getattr(section, f) for f, arg in simple.items() if getattr(section, f)}
        if section.kv_cache_free_gpu_memory_fraction is not None:
            from tensorrt_llm.llmapi import KvCacheConfig

            kwargs["kv_cache_config"] = KvCacheConfig(
                free_gpu_memory_fraction=section.kv_cache_free_gpu_memory_fraction
            )
    algo = (section.quantization if section else None) or _QUANT_ALGOS.get(config.precision)
    if algo is not None:
        from tensorrt_llm.llmapi import QuantAlgo, QuantConfig

        name = _QUANT_ALGOS.get(algo, algo)
        kwargs["quant_config"] = QuantConfig(quant_algo=getattr(QuantAlgo, name))
        kwargs["dtype"] = "bfloat16" if kwargs["dtype"] == "auto" else kwargs["dtype"]
    return kwargs
