"""TensorRT-LLM backend (the ``tensorrt_llm.LLM`` API).

UNTESTED ON HARDWARE IN THIS REPOSITORY: TensorRT-LLM is not installed where this code was
written and no GPU run has exercised it. It follows the documented LLM API
(``LLM(model, dtype, tensor_parallel_size, pipeline_parallel_size, max_batch_size,
max_seq_len, max_num_tokens, kv_cache_config, quant_config, skip_tokenizer_init,
load_format="dummy")``, ``SamplingParams(max_tokens, min_tokens, ignore_eos, ...)``).
Importing this module without TensorRT-LLM raises BackendNotInstalledError with the install
command. Engines are built or loaded inside ``initialize`` (before the window).

Timing: offline ``generate`` does not stream; only end-to-end window time and token counts
are recorded (``timing_method="e2e_only"``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llenergymeasure.core.backends._engine_common import (
    PRECISION_DTYPES,
    engine_timing,
    load_tokenizer,
    prepare_token_ids,
    random_model_dir,
    require_module,
)
from llenergymeasure.core.backends.protocol import (
    InferenceOutput,
    PreparedBatches,
    RuntimeCapabilities,
)
from llenergymeasure.exceptions import BackendError

require_module("tensorrt_llm", "tensorrt")

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.datasets.types import Prompt

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


class TensorRTBackend:
    """The ``tensorrt`` backend."""

    name = "tensorrt"

    def __init__(self) -> None:
        self._config: ExperimentConfig | None = None
        self._llm: Any = None
        self._tokenizer: Any = None
        self._sampling: Any = None

    def get_runtime_capabilities(self) -> RuntimeCapabilities:
        """TensorRT-LLM manages its own CUDA context and MPI workers."""
        return RuntimeCapabilities(
            launch_mode="direct",
            cuda_management="backend",
            supports_streaming_timestamps=False,
            notes=(NO_STREAM_REASON,),
        )

    def validate_config(self, config: ExperimentConfig) -> list[str]:
        """Warnings: no per-token timing."""
        return [NO_STREAM_REASON]

    def initialize(self, config: ExperimentConfig, prompts: list[Prompt]) -> None:
        """Build/load the engine (dummy weights for weights: random)."""
        from tensorrt_llm import LLM

        from llenergymeasure.core.models.loading import effective_weights

        self._config = config
        random_weights = effective_weights(config) == "random"
        self._tokenizer = load_tokenizer(config, random_weights)
        model = str(random_model_dir(config)) if random_weights else config.model
        try:
            self._llm = LLM(**llm_kwargs(config, model, random_weights))
        except Exception as e:  # vendor boundary
            raise BackendError(f"TensorRT-LLM could not build/load the engine: {e}") from e
        self._sampling = sampling_params(config, config.max_output_tokens)

    def tokenize(self, prompts: list[Prompt]) -> PreparedBatches:
        """Token ids for every prompt."""
        config = self._require_config()
        prepared = prepare_token_ids(self._tokenizer, prompts, config)
        self._sampling = sampling_params(config, prepared.max_new_tokens)
        return prepared

    def warmup_step(self, prepared: PreparedBatches) -> float:
        """Generate for the first few prompts; latency in s."""
        batch = prepared.batches[0]
        start = time.perf_counter()
        self._generate(batch.payload[: min(8, batch.size)])
        return time.perf_counter() - start

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
        )

    def _generate(self, token_lists: list[list[int]]) -> list[Any]:
        """LLM.generate on token-id prompts."""
        try:
            return list(self._llm.generate(token_lists, self._sampling, use_tqdm=False))
        except Exception as e:  # vendor boundary
            raise BackendError(f"TensorRT-LLM generate failed: {e}") from e

    def synchronize(self) -> None:
        """generate returns when every request is done: nothing is queued."""

    def device_indices(self) -> list[int]:
        """The first tp x pp visible GPUs."""
        config = self._require_config()
        section = config.tensorrt
        n = ((section.tp_size if section else None) or 1) * (
            (section.pp_size if section else None) or 1
        )
        return (config.gpus or list(range(n)))[:n]

    def cleanup(self) -> None:
        """Shut the engine's workers down."""
        if self._llm is not None and hasattr(self._llm, "shutdown"):
            self._llm.shutdown()
        self._llm = None

    def _require_config(self) -> ExperimentConfig:
        if self._config is None:
            raise BackendError("tensorrt backend used before initialize()")
        return self._config


def llm_kwargs(config: ExperimentConfig, model: str, random_weights: bool) -> dict[str, Any]:
    """Keyword arguments for ``tensorrt_llm.LLM``."""
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


def sampling_params(config: ExperimentConfig, max_new_tokens: int) -> Any:
    """``tensorrt_llm.SamplingParams`` for the decoder settings."""
    from tensorrt_llm import SamplingParams

    decoder = config.decoder
    kwargs: dict[str, Any] = {
        "max_tokens": max_new_tokens,
        "ignore_eos": decoder.ignore_eos,
        "detokenize": False,  # skip_tokenizer_init: token ids in and out
    }
    if decoder.ignore_eos:
        kwargs["min_tokens"] = max_new_tokens
    elif decoder.min_new_tokens:
        kwargs["min_tokens"] = decoder.min_new_tokens
    if decoder.strategy == "sample":
        kwargs["temperature"] = decoder.temperature if decoder.temperature is not None else 1.0
        kwargs["seed"] = config.random_seed
    else:
        kwargs["temperature"] = 0.0
    if decoder.strategy == "beam_search":
        kwargs["use_beam_search"] = True
        kwargs["n"] = kwargs["best_of"] = decoder.num_beams or 4
    for name in ("top_p", "top_k", "repetition_penalty"):
        if getattr(decoder, name) is not None:
            kwargs[name] = getattr(decoder, name)
    kwargs.update(config.passthrough_kwargs or {})
    return SamplingParams(**kwargs)
