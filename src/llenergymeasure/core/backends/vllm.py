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
    engine_timing,
    load_tokenizer,
    prepare_token_ids,
    random_model_dir,
    require_module,
    wall_to_perf_offset_s,
)
from llenergymeasure.core.backends.protocol import (
    InferenceOutput,
    PreparedBatches,
    RuntimeCapabilities,
)
from llenergymeasure.exceptions import BackendError

require_module("vllm", "vllm")

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.metrics import RequestTiming
    from llenergymeasure.datasets.types import Prompt

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


class VLLMBackend:
    """The ``vllm`` backend: the whole request list goes to ``LLM.generate`` at once."""

    name = "vllm"

    def __init__(self) -> None:
        self._config: ExperimentConfig | None = None
        self._llm: Any = None
        self._tokenizer: Any = None
        self._sampling: Any = None

    def get_runtime_capabilities(self) -> RuntimeCapabilities:
        """vLLM starts its own workers and CUDA contexts."""
        return RuntimeCapabilities(
            launch_mode="direct",
            cuda_management="backend",
            supports_streaming_timestamps=False,
            notes=("per-request TTFT/E2E only where vLLM reports RequestOutput.metrics",),
        )

    def validate_config(self, config: ExperimentConfig) -> list[str]:
        """Warnings: no per-token timing with the offline engine."""
        return ["vLLM offline engine: ITL is not measured (no streaming in LLM.generate)"]

    def initialize(self, config: ExperimentConfig, prompts: list[Prompt]) -> None:
        """Start the engine (dummy weights for weights: random) and build SamplingParams."""
        from vllm import LLM

        from llenergymeasure.core.models.loading import effective_weights

        self._config = config
        random_weights = effective_weights(config) == "random"
        self._tokenizer = load_tokenizer(config, random_weights)
        model = str(random_model_dir(config)) if random_weights else config.model
        self._llm = LLM(**llm_kwargs(config, model, random_weights))
        self._sampling = sampling_params(config, config.max_output_tokens)

    def tokenize(self, prompts: list[Prompt]) -> PreparedBatches:
        """Token ids for every prompt (the engine skips its own tokenizer); sampling params
        take the prepared output length."""
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

    def synchronize(self) -> None:
        """LLM.generate returns only when every request is done: nothing is queued."""

    def device_indices(self) -> list[int]:
        """GPUs vLLM uses: the first tensor_parallel x pipeline_parallel visible devices."""
        config = self._require_config()
        section = config.vllm
        tp = (section.tensor_parallel_size if section else None) or 1
        pp = (section.pipeline_parallel_size if section else None) or 1
        visible = config.gpus or list(range(tp * pp))
        return visible[: tp * pp]

    def cleanup(self) -> None:
        """Drop the engine (its workers exit with it)."""
        self._llm = None

    def _require_config(self) -> ExperimentConfig:
        if self._config is None:
            raise BackendError("vllm backend used before initialize()")
        return self._config


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


def sampling_params(config: ExperimentConfig, max_new_tokens: int) -> Any:
    """``SamplingParams`` for the decoder settings (greedy = temperature 0)."""
    from vllm import SamplingParams

    decoder = config.decoder
    kwargs: dict[str, Any] = {
        "max_tokens": max_new_tokens,
        "ignore_eos": decoder.ignore_eos,
        "detokenize": False,  # the engine runs without a tokenizer (token ids in and out)
    }
    kwargs["min_tokens"] = max_new_tokens if decoder.ignore_eos else (decoder.min_new_tokens or 0)
    kwargs["temperature"] = 0.0 if decoder.strategy == "greedy" else (decoder.temperature or 1.0)
    for name in ("top_p", "top_k", "repetition_penalty"):
        if getattr(decoder, name) is not None:
            kwargs[name] = getattr(decoder, name)
    if decoder.strategy == "sample":
        kwargs["seed"] = config.random_seed
    kwargs.update(config.passthrough_kwargs or {})
    return SamplingParams(**kwargs)


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
