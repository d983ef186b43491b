"""transformers / PyTorch inference backend.

Fixed-size batches (``pytorch.batch_size``, default 1) of left-padded prompts go through
``model.generate``. Everything except generation happens before the measurement window:
the model is loaded in :meth:`initialize`; prompts are tokenised, padded and copied to the
device in :meth:`tokenize`. :meth:`run_inference` only calls ``generate`` and records one
timestamp per decode step (see ``core/latency.py``).

Static cache (``pytorch.cache_implementation: static``) uses transformers' own path: the
decode step is compiled automatically on CUDA (``torch_compile: false`` turns that off,
``torch_compile: true`` asks for it and also enables it on CPU). All batches are then padded
to the longest prompt so that the compiled shapes do not change inside the window, and
:meth:`warmup_step` runs every distinct batch shape so that compilation happens in warm-up.
``torch.compile(mode="reduce-overhead")`` around ``forward`` is deliberately not used (it
fails inside generate on CUDA: docs/measurement.md §13).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llenergymeasure.core.backends._engine_common import encode_prompts, output_length
from llenergymeasure.core.backends.protocol import (
    InferenceOutput,
    PreparedBatch,
    PreparedBatches,
    RuntimeCapabilities,
)
from llenergymeasure.core.backends.pytorch_settings import (
    attention_kernels,
    build_generation_config,
    fix_output_length,
    resolve_device,
    section_of,
    seed_everything,
    uses_static_cache,
)
from llenergymeasure.exceptions import BackendError

#: What torch's SDPA says when none of the allowed kernels runs (CUDA, CPU).
NO_SDPA_KERNEL = ("No available kernel", "No viable backend for scaled_dot_product_attention")

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.latency import StepRecorder
    from llenergymeasure.core.latency_clock import TokenClock
    from llenergymeasure.core.metrics import RequestTiming
    from llenergymeasure.datasets.types import Prompt

DEFAULT_BATCH_SIZE = 1


@dataclass
class _Tensors:
    """A batch's device tensors (the PreparedBatch payload)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


PEAK_METHOD = (
    "torch.cuda.max_memory_allocated over the window (this process's tensors; summed over GPUs)"
)
CPU_PEAK_REASON = "pytorch on CPU: no device memory counter (tracked on CUDA devices only)"


class PyTorchBackend:
    """The ``pytorch`` backend (transformers ``generate``)."""

    name = "pytorch"

    def __init__(self) -> None:
        self._config: ExperimentConfig | None = None
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._generation_config: GenerationConfig | None = None
        self._device = "cpu"

    # ---- description -----------------------------------------------------------------------
    def get_runtime_capabilities(
        self, config: ExperimentConfig | None = None
    ) -> RuntimeCapabilities:
        """Direct launch in the orchestrator's process, or — with ``pytorch.num_processes``
        set, even to 1 — ``processes``: that many data-parallel workers started by the
        orchestrator, each on its own GPU (or CPU). CUDA owned by the orchestrator;
        streaming timestamps except with beam search."""
        config = config if config is not None else self._config
        beams = config is not None and config.decoder.strategy == "beam_search"
        processes = section_of(config).num_processes if config is not None else None
        return RuntimeCapabilities(
            launch_mode="direct" if processes is None else "processes",
            cuda_management="orchestrator",
            supports_streaming_timestamps=not beams,
            n_processes=processes or 1,
        )

    def validate_config(self, config: ExperimentConfig) -> list[str]:
        """Warnings about choices this backend realises differently than asked."""
        section = section_of(config)
        warnings: list[str] = []
        if section.torch_compile and section.cache_implementation == "dynamic":
            warnings.append(
                "pytorch.torch_compile uses transformers' static-cache compile path: "
                "cache_implementation: dynamic is overridden to static"
            )
        if config.decoder.strategy == "beam_search":
            warnings.append(f"TTFT/ITL not measured: {_beam_reason()}")
        if uses_static_cache(section):
            warnings.append(
                "static cache: every batch is padded to the longest prompt so compiled "
                "shapes stay fixed (padding is excluded from token counts)"
            )
        return warnings

    # ---- set-up (not measured) -------------------------------------------------------------
    def initialize(self, config: ExperimentConfig, prompts: list[Prompt]) -> None:
        """Resolve the device, seed everything, load model + tokenizer, build the generation
        config."""
        from llenergymeasure.core.models.loading import load_model_and_tokenizer, torch_dtype_for

        self._config = config
        self._device = resolve_device(config)
        seed_everything(config.random_seed)
        model, tokenizer = load_model_and_tokenizer(
            config, self._device, torch_dtype_for(config.precision)
        )
        self._model, self._tokenizer = model, tokenizer
        self._generation_config = build_generation_config(model, config, self._device)

    def tokenize(self, prompts: list[Prompt]) -> PreparedBatches:
        """Tokenise (truncating to max_input_tokens), order, batch, left-pad, copy to device."""
        config, tokenizer = self._require_config(), self._require_tokenizer()
        section = section_of(config)
        ids = _unique_request_ids(prompts)
        token_lists = encode_prompts(tokenizer, prompts, config.max_input_tokens)
        truncated = sum(1 for t in token_lists if t[1])
        order = list(range(len(prompts)))
        if section.sort_by_length:
            order.sort(key=lambda i: len(token_lists[i][0]), reverse=True)
        batch_size = section.batch_size or DEFAULT_BATCH_SIZE
        pad_to = max(len(t[0]) for t in token_lists) if uses_static_cache(section) else None
        batches = [
            self._make_batch([ids[i] for i in chunk], [token_lists[i][0] for i in chunk], pad_to)
            for chunk in _chunks(order, batch_size)
        ]
        max_new, notes = output_length(config, prompts)
        self._require_generation_config().max_new_tokens = max_new
        fix_output_length(self._require_generation_config(), config, max_new)
        return PreparedBatches(batches, max_new, truncated_requests=truncated, notes=notes)

    def _make_batch(
        self, request_ids: list[str], token_lists: list[list[int]], pad_to: int | None
    ) -> PreparedBatch:
        """Left-pad one batch and move it to the device."""
        import torch

        pad_id = self._require_tokenizer().pad_token_id
        length = pad_to or max(len(t) for t in token_lists)
        rows = [[pad_id] * (length - len(t)) + t for t in token_lists]
        masks = [[0] * (length - len(t)) + [1] * len(t) for t in token_lists]
        tensors = _Tensors(
            input_ids=torch.tensor(rows, dtype=torch.long, device=self._device),
            attention_mask=torch.tensor(masks, dtype=torch.long, device=self._device),
        )
        return PreparedBatch(request_ids, [len(t) for t in token_lists], length, tensors)

    # ---- warm-up and measurement -----------------------------------------------------------
    def warmup_batches(self, prepared: PreparedBatches) -> list[PreparedBatch]:
        """Static cache: one batch per distinct shape (each compiles); else the first batch."""
        if uses_static_cache(section_of(self._require_config())):
            return prepared.distinct_shape_batches()
        return prepared.batches[:1]

    def warmup_step(self, prepared: PreparedBatches) -> float:
        """Generate the :meth:`warmup_batches` once, step recorder included (not with beam
        search, which is timed end to end); latency in s."""
        from llenergymeasure.core.latency_clock import TokenClock

        beams = self._require_config().decoder.strategy == "beam_search"
        start = time.perf_counter()
        for i, batch in enumerate(self.warmup_batches(prepared)):
            if beams:
                self._generate(batch, None)
                continue
            ids = [f"warmup-{i}-{j}" for j in range(batch.size)]
            self._recorded_batch(batch, self._step_recorder(TokenClock()), ids)
        self.synchronize()
        return time.perf_counter() - start

    def run_inference(self, prepared: PreparedBatches) -> InferenceOutput:
        """Generate every batch; per-step timestamps via the step recorder (the measured part)."""
        from llenergymeasure.core.latency_clock import TokenClock

        self._reset_peak_memory()
        clock = TokenClock()
        beams = self._require_config().decoder.strategy == "beam_search"
        recorder = None if beams else self._step_recorder(clock)
        start = time.perf_counter()
        outputs: list[list[int]] = []
        timings: list[RequestTiming] = []
        batch_durations: list[float] = []
        for batch in prepared.batches:
            if recorder is not None:
                batch_start, new_tokens = self._recorded_batch(batch, recorder, batch.request_ids)
                outputs.extend(new_tokens)
            else:
                batch_start = time.perf_counter()
                timings.extend(self._run_untimed_batch(batch, outputs))
            batch_durations.append(time.perf_counter() - batch_start)
        duration = time.perf_counter() - start
        timings = clock.finish() if recorder is not None else timings
        return InferenceOutput(
            timings=timings,
            n_batches=len(prepared.batches),
            device=self._device,
            timing_method="e2e_only" if recorder is None else recorder.timing_method,
            duration_s=duration,
            peak_memory_bytes=(peak := self._peak_memory()),
            peak_memory_method=PEAK_METHOD if peak is not None else None,
            peak_memory_not_measured_reason=None if peak is not None else CPU_PEAK_REASON,
            padded_input_tokens=prepared.padded_input_tokens,
            ttft_not_measured_reason=_beam_reason() if beams else None,
            output_token_ids=outputs,
            batch_durations_s=batch_durations,
        )

    def _recorded_batch(
        self, batch: PreparedBatch, recorder: StepRecorder, request_ids: list[str]
    ) -> tuple[float, list[list[int]]]:
        """One generate with per-step times; returns the batch's start time and new tokens."""
        start = recorder.begin_batch(request_ids, batch.input_tokens)
        new_tokens = self._new_tokens(batch, self._generate(batch, recorder))
        recorder.end_batch([len(t) for t in new_tokens])
        return start, new_tokens

    def _run_untimed_batch(self, batch: PreparedBatch, outputs: list[list[int]]) -> list[Any]:
        """Beam search: end-to-end time only; counts come from the returned sequences."""
        from llenergymeasure.core.metrics import RequestTiming

        start = time.perf_counter()
        new_tokens = self._new_tokens(batch, self._generate(batch, None))
        outputs.extend(new_tokens)
        return [
            RequestTiming(request_start_s=start, input_tokens=n_in, output_tokens=len(toks))
            for n_in, toks in zip(batch.input_tokens, new_tokens, strict=True)
        ]

    def _generate(self, batch: PreparedBatch, recorder: StepRecorder | None) -> torch.Tensor:
        """One ``generate`` call with the prepared generation config and passthrough kwargs;
        the step recorder joins any stopping criteria passed through."""
        import torch
        from transformers import StoppingCriteriaList

        tensors: _Tensors = batch.payload
        extra = dict(self._require_config().passthrough_kwargs or {})
        if recorder is not None:
            extra["stopping_criteria"] = StoppingCriteriaList(
                [*(extra.get("stopping_criteria") or []), recorder]
            )
        section = section_of(self._require_config())
        with torch.inference_mode(), attention_kernels(section):
            try:
                generate: Any = self._require_model().generate
                out: torch.Tensor = generate(
                    input_ids=tensors.input_ids,
                    attention_mask=tensors.attention_mask,
                    generation_config=self._require_generation_config(),
                    **extra,
                )
            except torch.cuda.OutOfMemoryError as e:
                raise BackendError(
                    f"CUDA out of memory at batch size {batch.size}: lower pytorch.batch_size "
                    "or max_output_tokens"
                ) from e
            except RuntimeError as e:
                if section.sdpa_backends and any(m in str(e) for m in NO_SDPA_KERNEL):
                    raise BackendError(
                        f"pytorch.sdpa_backends {section.sdpa_backends}: none of these "
                        f"attention kernels runs here ({self._device}, "
                        f"{self._require_config().precision}); allow another (math runs "
                        "everywhere) or leave it unset for PyTorch's choice"
                    ) from e
                raise
        return out

    def _new_tokens(self, batch: PreparedBatch, sequences: torch.Tensor) -> list[list[int]]:
        """Generated ids per request, cut after the first EOS (padding after it excluded)."""
        generated = sequences[:, batch.padded_length :].tolist()
        eos = _eos_ids(self._require_generation_config())
        if self._require_config().decoder.ignore_eos or not eos:
            return [list(row) for row in generated]
        return [_cut_after_eos(row, eos) for row in generated]

    def _step_recorder(self, clock: TokenClock) -> StepRecorder:
        """Per-step timestamps: CUDA events on a GPU, the host clock on CPU."""
        from llenergymeasure.core.latency import make_step_recorder

        return make_step_recorder(clock, self._device)

    # ---- device ----------------------------------------------------------------------------
    def synchronize(self) -> None:
        """torch.cuda.synchronize on every device in use; no-op on CPU."""
        import torch

        for index in self.device_indices():
            torch.cuda.synchronize(index)

    def device_indices(self) -> list[int]:
        """CUDA indices the model lives on (every GPU of a device_map), [] on CPU."""
        model = self._model
        if model is None or not self._device.startswith("cuda"):
            return []
        device_map = getattr(model, "hf_device_map", None)
        if device_map:
            return cuda_indices_of_device_map(device_map)
        return [model.device.index or 0]

    def _reset_peak_memory(self) -> None:
        """Start peak-memory tracking for the window."""
        import torch

        for index in self.device_indices():
            torch.cuda.reset_peak_memory_stats(index)

    def _peak_memory(self) -> int | None:
        """Peak allocated bytes over the devices in use since the reset (None on CPU)."""
        import torch

        indices = self.device_indices()
        if not indices:
            return None
        return sum(int(torch.cuda.max_memory_allocated(i)) for i in indices)

    def cleanup(self, *, process_exits: bool = False) -> None:
        """Drop the model and free cached device memory; when the process exits next (a
        study child), its exit frees both and the garbage collection is skipped (0.28 s of
        ``gc.collect`` per experiment on the H200 VM, docs/studies.md)."""
        self._model = None
        self._tokenizer = None
        self._generation_config = None
        if self._device.startswith("cuda") and not process_exits:
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()

    # ---- state accessors -------------------------------------------------------------------
    def _require_config(self) -> ExperimentConfig:
        if self._config is None:
            raise BackendError("pytorch backend used before initialize()")
        return self._config

    def _require_model(self) -> PreTrainedModel:
        if self._model is None:
            raise BackendError("pytorch backend used before initialize() (or after cleanup())")
        return self._model

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            raise BackendError("pytorch backend used before initialize() (or after cleanup())")
        return self._tokenizer

    def _require_generation_config(self) -> GenerationConfig:
        if self._generation_config is None:
            raise BackendError("pytorch backend used before initialize() (or after cleanup())")
        return self._generation_config


# ---- pure helpers --------------------------------------------------------------------------


def cuda_indices_of_device_map(device_map: dict[str, Any]) -> list[int]:
    """The CUDA ordinals an ``hf_device_map`` places modules on, sorted.

    accelerate writes a bare int for a GPU, but ``"cuda:1"``, ``"cuda"`` (ordinal 0) and
    ``torch.device`` values occur too (user-given maps); ``"cpu"``, ``"disk"``, ``"meta"``
    and other device types are not GPUs.
    """
    indices: set[int] = set()
    for where in device_map.values():
        if isinstance(where, bool):
            continue
        if isinstance(where, int):
            indices.add(where)
            continue
        kind = getattr(where, "type", None)
        if kind is not None:  # a torch.device
            if kind == "cuda":
                indices.add(getattr(where, "index", None) or 0)
            continue
        text = str(where).strip()
        if text.isdigit():
            indices.add(int(text))
        elif text == "cuda" or text.startswith("cuda:"):
            tail = text.partition(":")[2]
            indices.add(int(tail) if tail.isdigit() else 0)
    return sorted(indices)


def _beam_reason() -> str:
    from llenergymeasure.core.latency import BEAM_SEARCH_NO_TTFT_REASON

    return BEAM_SEARCH_NO_TTFT_REASON


def _unique_request_ids(prompts: list[Prompt]) -> list[str]:
    """Prompt ids, made unique with the position when the dataset repeats an id."""
    ids = [str(p.id) for p in prompts]
    if len(set(ids)) == len(ids):
        return ids
    return [f"{pid}#{i}" for i, pid in enumerate(ids)]


def _chunks(items: list[int], size: int) -> list[list[int]]:
    """Consecutive chunks of ``size`` (the last may be shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _eos_ids(gen: GenerationConfig) -> set[int]:
    """EOS ids of the generation config (an int or a list)."""
    eos = gen.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, list) else [eos])}


def _cut_after_eos(row: list[int], eos: set[int]) -> list[int]:
    """Tokens up to and including the first EOS."""
    for i, token in enumerate(row):
        if token in eos:
            return row[: i + 1]
    return row
