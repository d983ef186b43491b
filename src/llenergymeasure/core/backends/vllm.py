"""vLLM offline-engine backend (``vllm.LLM``).

UNTESTED ON HARDWARE IN THIS REPOSITORY: vLLM is not installed where this code was written
and no GPU run has exercised it yet. It is written against vLLM's documented offline API
(``LLM(model, dtype, tensor_parallel_size, load_format="dummy", skip_tokenizer_init, ...)``,
``SamplingParams(max_tokens, min_tokens, ignore_eos, temperature, ...)``,
``RequestOutput.metrics``). Importing this module without vLLM raises
BackendNotInstalledError with the install command.

Timing: vLLM's offline ``generate`` does not stream, so per-token times are not observable.
Where the engine reports per-request ``metrics`` (V0: ``first_token_time``/``last_token_time``,
wall clock; V1 ``RequestStateStats``: ``first_token_ts``/``last_token_ts``, monotonic),
TTFT/E2E come from them
(``timing_method="engine_metrics"``); otherwise only token counts and the window's
duration are known (``e2e_only``, with the reason).
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
    wall_to_perf_offset_s,
)
from llenergymeasure.core.backends.protocol import InferenceOutput, PreparedBatches
from llenergymeasure.exceptions import BackendError

require_module("vllm", "vllm")

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.metrics import RequestTiming

NO_METRICS_REASON = (
    "vLLM returned no per-request metrics (V1 offline engine): offline generate does not "
    "stream, so TTFT/ITL are not measured; only end-to-end window time"
)
_SECTION_TO_LLM = {
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "tensor_parallel_size": "tensor_parallel_size",
    "pipeline_parallel_size": "pipeline_parallel_size",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "enable_prefix_caching": "enable_prefix_caching",
    "enable_chunked_prefill": "enable_chunked_prefill",
    "enforce_eager": "enforce_eager",
    "quantization": "quantization",
    "kv_cache_dtype": "kv_cache_dtype",
    "max_model_len": "max_model_len",
    "block_size": "block_size",
    "swap_space_gb": "swap_space",
}


class VLLMBackend(EngineBackend):
    """The ``vllm`` backend: the whole request list goes to ``LLM.generate`` at once."""

    name = "vllm"
    CAPABILITY_NOTES = ("per-request TTFT/E2E only where vLLM reports RequestOutput.metrics",)

    def validate_config(self, config: ExperimentConfig) -> list[str]:
        """Warnings: no per-token timing with the offline engine."""
        return ["vLLM offline engine: ITL is not measured (no streaming in LLM.generate)"]

    def _create_engine(self, config: ExperimentConfig, model: str, random_weights: bool) -> Any:
        """``vllm.LLM`` started with the config's engine arguments."""
        from vllm import LLM

        return LLM(**llm_kwargs(config, model, random_weights))

    def _sampling_params(self, config: ExperimentConfig, max_new_tokens: int) -> Any:
        """``SamplingParams`` for the decoder settings (greedy = temperature 0)."""
        from vllm import SamplingParams

        decoder = config.decoder
        engine: dict[str, Any] = {
            "min_tokens": max_new_tokens if decoder.ignore_eos else (decoder.min_new_tokens or 0),
            "temperature": 0.0 if decoder.strategy == "greedy" else (decoder.temperature or 1.0),
        }
        if decoder.strategy == "sample":
            engine["seed"] = config.random_seed
        return SamplingParams(**sampling_kwargs(config, max_new_tokens, engine))

    def _parallel_sizes(self, config: ExperimentConfig) -> tuple[int | None, int | None]:
        section = config.vllm
        if section is None:
            return None, None
        return section.tensor_parallel_size, section.pipeline_parallel_size

    def run_inference(self, prepared: PreparedBatches) -> InferenceOutput:
        """All prompts in one ``generate`` call (vLLM schedules them itself)."""
        batch = prepared.batches[0]
        offset_s = wall_to_perf_offset_s()
        start = time.perf_counter()
        outputs = self._generate(batch.payload)
        duration = time.perf_counter() - start
        timings = [
            _timing(o, start, n_in, offset_s)
            for o, n_in in zip(outputs, batch.input_tokens, strict=True)
        ]
        has_metrics = any(len(t.token_times_s) for t in timings)
        return InferenceOutput(
            timings=timings,
            n_batches=1,
            device="cuda",
            timing_method="engine_metrics" if has_metrics else "e2e_only",
            duration_s=duration,
            ttft_not_measured_reason=None if has_metrics else NO_METRICS_REASON,
            output_token_ids=[list(o.outputs[0].token_ids) for o in outputs],
        )

    def _generate(self, token_lists: list[list[int]]) -> list[Any]:
        """LLM.generate on token-id prompts, without a progress bar."""
        prompts = [{"prompt_token_ids": ids} for ids in token_lists]
        try:
            return list(self._llm.generate(prompts, self._sampling, use_tqdm=False))
        except Exception as e:  # vendor boundary: translate once
            raise BackendError(f"vLLM generate failed: {e}") from e


def llm_kwargs(config: ExperimentConfig, model: str, random_weights: bool) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` from the config (None fields are left to vLLM)."""
    kwargs: dict[str, Any] = {
        "model": model,
        "seed": config.random_seed,
        "skip_tokenizer_init": True,
        "dtype": PRECISION_DTYPES.get(config.precision, "auto"),
    }
    if config.precision == "fp8":
        kwargs["quantization"] = "fp8"
    if random_weights:
        kwargs["load_format"] = "dummy"
    section = config.vllm
    if section is not None:
        for field, arg in _SECTION_TO_LLM.items():
            if getattr(section, field) is not None:
                kwargs[arg] = getattr(section, field)
    return kwargs


def _timing(output: Any, start_s: float, n_in: int, offset_s: float) -> RequestTiming:
    """RequestTiming from a RequestOutput, engine times moved to the perf_counter clock.

    vLLM V0 reports ``first_token_time``/``last_token_time`` (wall clock, ``time.time``);
    V1's ``RequestStateStats`` reports ``first_token_ts``/``last_token_ts``
    (``time.monotonic``). Anything else: counts only.
    """
    n_out = len(output.outputs[0].token_ids)
    metrics = getattr(output, "metrics", None)
    first, last = _engine_times(metrics, offset_s)
    return engine_timing(start_s, n_in, n_out, first, last)


def _engine_times(metrics: Any, wall_offset_s: float) -> tuple[float | None, float | None]:
    """(first, last) token times on the perf_counter clock, or (None, None)."""
    if metrics is None:
        return None, None
    first = getattr(metrics, "first_token_time", None)
    last = getattr(metrics, "last_token_time", None)
    if first is not None and last is not None:
        return first + wall_offset_s, last + wall_offset_s
    first = getattr(metrics, "first_token_ts", None)
    last = getattr(metrics, "last_token_ts", None)
    if first and last:
        mono_offset_s = time.perf_counter() - time.monotonic()
        return first + mono_offset_s, last + mono_offset_s
    return None, None
