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

    def _create_engine(self, config: ExperimentConfig, model: str, random_weights: bool) -> Any:
        """Build or load the engine (``tensorrt_llm.LLM``)."""
        from tensorrt_llm import LLM

        try:
            return LLM(**llm_kwargs(config, model, random_weights))
        except Exception as e:  # vendor boundary
            raise BackendError(f"TensorRT-LLM could not build/load the engine: {e}") from e

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
