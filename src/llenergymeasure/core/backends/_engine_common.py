"""Shared pieces of the engine backends (vLLM, TensorRT-LLM) that take whole request lists.

Both engines schedule requests themselves (continuous batching), so the prepared input is
one "batch" holding every prompt as token ids; tokenisation happens before the window with
the same tokenizer the pytorch backend uses, and the engines are started with
``skip_tokenizer_init`` so they do no text processing inside the window.

For ``weights: random`` the engines need a model directory: :func:`random_model_dir` writes
the architecture's ``config.json`` (from the catalogue or a local config) into a directory
named by the hash of its content (under a study's cache, else the system temp dir) that the
engine loads with dummy weights. The path is part of vLLM's compile-cache key, so the same
architecture must always get the same path: a fresh temporary directory per experiment made
every vLLM engine start compile from scratch.

:class:`EngineBackend` is the life cycle both share (tokenizer, engine start, sampling
parameters, warm-up, devices, cleanup); a subclass fills in its engine through a few hooks
and writes its own ``validate_config`` and ``run_inference``.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.core.backends.protocol import (
    PreparedBatch,
    PreparedBatches,
    RuntimeCapabilities,
)
from llenergymeasure.exceptions import BackendError, BackendNotInstalledError, ConfigError

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.metrics import RequestTiming
    from llenergymeasure.datasets.types import Prompt

PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def require_module(module: str, extra: str) -> None:
    """BackendNotInstalledError naming the pip extra when ``module`` is not importable."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BackendNotInstalledError(
            f'{module} is not installed: pip install "llenergymeasure[{extra}]"'
        )


def random_model_dir(config: ExperimentConfig, base: Path | None = None) -> Path:
    """A directory holding the architecture's config.json (for dummy weights), named by the
    hash of that file: ``<base or the temp dir>/llem-arch-<sha256[:16]>``. The same
    architecture always gets the same path (engines key their compile caches on it); the
    file is written atomically, so concurrent runs agree on it."""
    from llenergymeasure.catalogue.architectures import resolve_architecture

    spec = resolve_architecture(config.model)
    if spec is None:
        raise ConfigError(
            f"model {config.model!r}: weights: random needs a catalogue name or a local "
            "config.json for the engine backends"
        )
    data = dict(spec.config)
    data.setdefault("architectures", [_architecture_class(spec.model_type)])
    text = json.dumps(data, indent=2, sort_keys=True)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    out = Path(base if base is not None else tempfile.gettempdir()) / f"llem-arch-{digest}"
    target = out / "config.json"
    if not (target.is_file() and target.read_text(encoding="utf-8") == text):
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=out)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    return out


def _architecture_class(model_type: str) -> str:
    """The ``*ForCausalLM`` class name engines use to pick a model implementation."""
    names = {
        "llama": "LlamaForCausalLM",
        "mistral": "MistralForCausalLM",
        "gpt2": "GPT2LMHeadModel",
    }
    names |= {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
    return names.get(model_type, f"{model_type.capitalize()}ForCausalLM")


def load_tokenizer(config: ExperimentConfig, random_weights: bool) -> Any:
    """The offline tokenizer for random weights, else the model's own (left padding)."""
    if random_weights:
        from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer

        return load_offline_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(config.model)


def prepare_token_ids(
    tokenizer: Any, prompts: list[Prompt], config: ExperimentConfig
) -> PreparedBatches:
    """One batch with every prompt as token ids (truncated to max_input_tokens); the output
    length follows :func:`output_length`."""
    max_new_tokens, notes = output_length(config, prompts)
    ids, lengths, payload, truncated = [], [], [], 0
    encoded = encode_prompts(tokenizer, prompts, config.max_input_tokens, allow_empty=True)
    for i, (prompt, (tokens, cut)) in enumerate(zip(prompts, encoded, strict=True)):
        truncated += cut
        ids.append(f"{prompt.id}#{i}")
        lengths.append(len(tokens))
        payload.append(tokens)
    batch = PreparedBatch(ids, lengths, max(lengths), payload)
    return PreparedBatches([batch], max_new_tokens, truncated_requests=truncated, notes=notes)


def encode_prompts(
    tokenizer: Any, prompts: list[Prompt], max_input_tokens: int, *, allow_empty: bool = False
) -> list[tuple[list[int], bool]]:
    """Token ids of every prompt, truncated to max_input_tokens: (ids, was_truncated) each.
    One batch call (a fast tokenizer encodes the batch on every core; the ids are those of
    one call per prompt). A prompt cut before tokenising (``prompt.cut``) counts as
    truncated; one that encodes to nothing is a ConfigError unless ``allow_empty``."""
    if not prompts:
        return []
    encoded: list[list[int]] = tokenizer([p.text for p in prompts])["input_ids"]
    out = []
    for prompt, ids in zip(prompts, encoded, strict=True):
        if not ids and not allow_empty:
            raise ConfigError(f"prompt {prompt.id!r} tokenises to nothing: remove empty prompts")
        out.append((ids[:max_input_tokens], len(ids) > max_input_tokens or prompt.cut))
    return out


def wall_to_perf_offset_s() -> float:
    """Add to a ``time.time()`` stamp to put it on the ``perf_counter`` clock."""
    return time.perf_counter() - time.time()


def engine_timing(
    start_s: float,
    n_in: int,
    n_out: int,
    first_token_s: float | None,
    last_token_s: float | None,
) -> RequestTiming:
    """A RequestTiming from engine-reported first/last token times (perf_counter clock);
    without them, counts only."""
    from llenergymeasure.core.metrics import RequestTiming

    times = [t for t in (first_token_s, last_token_s) if t is not None and t >= start_s]
    if n_out < 2 or len(times) < 2:
        times = times[:1] if n_out >= 1 else []
    return RequestTiming(
        request_start_s=start_s, token_times_s=times, input_tokens=n_in, output_tokens=n_out
    )


def output_length(config: ExperimentConfig, prompts: list[Prompt]) -> tuple[int, list[str]]:
    """max_new_tokens: the prompts' common target length if they all carry the same one
    (synthetic datasets), else config.max_output_tokens."""
    targets = {getattr(p, "target_output_tokens", None) for p in prompts}
    if len(targets) == 1 and (target := targets.pop()) is not None:
        return int(target), [f"output length {target} tokens from the dataset"]
    notes = []
    if len(targets) > 1:
        notes.append(
            "prompts carry different target output lengths; one generate() call needs one "
            f"length: using max_output_tokens={config.max_output_tokens}"
        )
    return config.max_output_tokens, notes


def sampling_kwargs(
    config: ExperimentConfig, max_new_tokens: int, engine_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Keyword arguments of an engine's ``SamplingParams``.

    The output length and EOS handling (token ids in and out: no detokenising), then the
    engine's own decoder arguments ``engine_kwargs``, the optional ``top_p``/``top_k``/
    ``repetition_penalty``, and last ``config.passthrough_kwargs`` (they override).
    """
    decoder = config.decoder
    kwargs: dict[str, Any] = {
        "max_tokens": max_new_tokens,
        "ignore_eos": decoder.ignore_eos,
        "detokenize": False,  # the engine runs without a tokenizer
        **engine_kwargs,
    }
    for name in ("top_p", "top_k", "repetition_penalty"):
        if getattr(decoder, name) is not None:
            kwargs[name] = getattr(decoder, name)
    kwargs.update(config.passthrough_kwargs or {})
    return kwargs


#: Prompts the warm-up step generates for (the first ones of the prepared batch).
WARMUP_PROMPTS = 8


class EngineBackend(abc.ABC):
    """An engine that takes the whole request list at once (``LLM.generate``).

    Hooks: :meth:`_create_engine`, :meth:`_sampling_params`, :meth:`_generate`,
    :meth:`_parallel_sizes` and (optionally) :meth:`_shutdown`;
    ``CAPABILITY_NOTES`` go into :meth:`get_runtime_capabilities`.
    """

    name: str
    CAPABILITY_NOTES: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._config: ExperimentConfig | None = None
        self._llm: Any = None
        self._tokenizer: Any = None
        self._sampling: Any = None
        #: Seconds the engine took to start in :meth:`initialize` (the orchestrator records
        #: it as the phase ``engine_start``, apart from the model load).
        self.engine_start_s: float | None = None
        self._study_cache: Path | None = None

    # ---- hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _create_engine(self, config: ExperimentConfig, model: str, random_weights: bool) -> Any:
        """The engine for ``config`` loading ``model`` (a path or id; dummy weights when
        ``random_weights``), vendor errors translated where the engine needs it."""

    @abc.abstractmethod
    def _sampling_params(self, config: ExperimentConfig, max_new_tokens: int) -> Any:
        """The engine's sampling parameters for the decoder settings."""

    @abc.abstractmethod
    def _generate(self, token_lists: list[list[int]]) -> list[Any]:
        """One ``generate`` call on token-id prompts: the engine's request outputs."""

    @abc.abstractmethod
    def _parallel_sizes(self, config: ExperimentConfig) -> tuple[int | None, int | None]:
        """(tensor parallel, pipeline parallel) sizes from ``config``; None: unset (1)."""

    def _shutdown(self, engine: Any) -> None:  # noqa: B027 (optional hook)
        """Release the engine's workers before it is dropped (default: nothing)."""

    def use_study_cache(self, cache_dir: Path) -> None:
        """Keep what the engine builds for a study under ``cache_dir`` (the orchestrator
        calls it with ``<study dir>/cache`` before anything is imported): here the random
        model directory; vLLM also its compile cache."""
        self._study_cache = Path(cache_dir)

    # ---- InferenceBackend ----------------------------------------------------------------
    def get_runtime_capabilities(
        self, config: ExperimentConfig | None = None
    ) -> RuntimeCapabilities:
        """The engine starts its own workers and CUDA contexts; no per-token stream."""
        return RuntimeCapabilities(
            launch_mode="direct",
            cuda_management="backend",
            supports_streaming_timestamps=False,
            notes=self.CAPABILITY_NOTES,
        )

    def initialize(self, config: ExperimentConfig, prompts: list[Prompt]) -> None:
        """Tokenizer, engine (dummy weights for weights: random) and sampling parameters."""
        from llenergymeasure.core.models.loading import effective_weights

        self._config = config
        random_weights = effective_weights(config) == "random"
        self._tokenizer = load_tokenizer(config, random_weights)
        base = self._study_cache / "arch" if self._study_cache is not None else None
        model = str(random_model_dir(config, base)) if random_weights else config.model
        start = time.perf_counter()
        self._llm = self._create_engine(config, model, random_weights)
        self.engine_start_s = time.perf_counter() - start
        self._sampling = self._sampling_params(config, config.max_output_tokens)

    def tokenize(self, prompts: list[Prompt]) -> PreparedBatches:
        """Token ids for every prompt (the engine skips its own tokenizer); the sampling
        parameters take the prepared output length."""
        config = self._require_config()
        prepared = prepare_token_ids(self._tokenizer, prompts, config)
        self._sampling = self._sampling_params(config, prepared.max_new_tokens)
        return prepared

    def warmup_step(self, prepared: PreparedBatches) -> float:
        """Generate for the first few prompts; latency in s."""
        batch = prepared.batches[0]
        start = time.perf_counter()
        self._generate(batch.payload[: min(WARMUP_PROMPTS, batch.size)])
        return time.perf_counter() - start

    def synchronize(self) -> None:  # noqa: B027 (deliberately nothing to do)
        """generate returns only when every request is done: nothing is queued."""

    def device_indices(self) -> list[int]:
        """The GPUs the engine uses: the first tensor parallel x pipeline parallel visible."""
        config = self._require_config()
        tp, pp = self._parallel_sizes(config)
        n = (tp or 1) * (pp or 1)
        return (config.gpus or list(range(n)))[:n]

    def cleanup(self, *, process_exits: bool = False) -> None:
        """Drop the engine (its workers exit with it, or at :meth:`_shutdown`), whether or
        not the process exits next: its worker processes must not outlive it."""
        if self._llm is not None:
            self._shutdown(self._llm)
        self._llm = None

    def _require_config(self) -> ExperimentConfig:
        if self._config is None:
            raise BackendError(f"{self.name} backend used before initialize()")
        return self._config
