"""Analytic GPU memory estimate for ``--dry-run`` and pre-flight (no torch import).

``total = weights + KV cache + overhead`` in decimal gigabytes (1 GB = 1e9 bytes):

* weights: parameters × bytes per parameter (fp32 4, fp16/bf16 2, int8/fp8 1, int4 0.5).
  For int8/fp8/int4 only the transformer blocks are quantised; token embeddings and the
  lm_head stay 16-bit, as bitsandbytes, vLLM and TensorRT-LLM do by default.
* KV cache: 2 (K and V) × layers × KV heads × head_dim × (max_input_tokens +
  max_output_tokens) × sequences in flight × bytes per element. The cache is kept in the
  activation dtype (fp32 4 bytes, fp16/bf16 2; bf16 for quantised weights) unless vLLM's
  ``kv_cache_dtype`` says fp8 (1 byte). Sequences in flight: pytorch ``batch_size`` (default
  1), vLLM ``max_num_seqs`` (vLLM's default 256), TensorRT ``max_batch_size`` (default 2048),
  each capped at ``n`` and multiplied by ``num_beams``.
* overhead: 10% of the weights (temporary buffers, allocator fragmentation) plus 0.5 GB of
  CUDA context. A rule of thumb, not a measurement: ``method`` says ``analytic``.

Tensor/pipeline parallelism divides weights and KV cache across GPUs (``per_gpu_gb``).

Usage::

    est = estimate_memory(cfg)
    est.total_gb, est.notes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, SyntheticDatasetConfig

BYTES_PER_GB = 1e9
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "fp8": 1.0, "int4": 0.5}
QUANTISED = frozenset({"int8", "fp8", "int4"})
UNQUANTISED_BYTES = 2.0  # embeddings / lm_head / KV of quantised models stay bf16
OVERHEAD_FRACTION_OF_WEIGHTS = 0.10
CUDA_CONTEXT_GB = 0.5
DEFAULT_CONCURRENCY = {"pytorch": 1, "vllm": 256, "tensorrt": 2048}


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated GPU memory of one experiment (``None`` fields: architecture unknown)."""

    weights_gb: float | None
    kv_cache_gb: float | None
    activations_overhead_gb: float | None
    total_gb: float | None
    method: str  # "analytic" | "unavailable"
    notes: list[str] = field(default_factory=list)
    per_gpu_gb: float | None = None
    n_gpus: int = 1
    sequences_in_flight: int | None = None
    sequence_len_tokens: int | None = None


def estimate_memory(cfg: ExperimentConfig) -> MemoryEstimate:
    """Estimate weights, KV cache and overhead for ``cfg`` (see the module docstring).

    Usage: ``estimate_memory(cfg).total_gb``. Returns ``None`` figures with a note when the
    model's architecture is not available offline (a Hub id that is not in the catalogue).
    """
    from llenergymeasure.catalogue.architectures import resolve_architecture
    from llenergymeasure.exceptions import ConfigError

    try:
        arch = resolve_architecture(cfg.model)
    except ConfigError as e:
        return _unavailable(f"architecture unreadable: {e}")
    if arch is None:
        return _unavailable(
            f"architecture unknown offline for {cfg.model!r}: use a catalogue name or a "
            "local directory with config.json to get an estimate"
        )
    return _estimate(cfg, arch)


def _unavailable(note: str) -> MemoryEstimate:
    """An estimate with no figures, saying why."""
    return MemoryEstimate(None, None, None, None, "unavailable", [note])


def _estimate(cfg: ExperimentConfig, arch: Any) -> MemoryEstimate:
    """The three terms for a known architecture."""
    notes: list[str] = []
    weight_precision = weights_precision(cfg)
    weights_b = weights_bytes(arch, weight_precision)
    in_flight = sequences_in_flight(cfg, notes)
    seq_len = sequence_len_tokens(cfg)
    kv_b = kv_cache_bytes(arch, seq_len, in_flight, kv_bytes_per_element(cfg))
    overhead_gb = OVERHEAD_FRACTION_OF_WEIGHTS * weights_b / BYTES_PER_GB + CUDA_CONTEXT_GB
    weights_gb, kv_gb = weights_b / BYTES_PER_GB, kv_b / BYTES_PER_GB
    n_gpus = model_parallel_gpus(cfg)
    sharded_gb = weights_gb * (1 + OVERHEAD_FRACTION_OF_WEIGHTS) + kv_gb
    per_gpu = sharded_gb / n_gpus + CUDA_CONTEXT_GB  # every GPU holds its own CUDA context
    if weight_precision in QUANTISED:
        notes.append(
            f"blocks quantised ({weight_precision}); embeddings and lm_head counted at 16-bit"
        )
    if cfg.backend == "vllm":
        notes.append(
            "vLLM pre-allocates gpu_memory_utilization (default 0.92) of GPU memory (on CPU: "
            "of the NUMA node's RAM) for weights and KV cache regardless of this estimate"
        )
    return MemoryEstimate(
        weights_gb=weights_gb,
        kv_cache_gb=kv_gb,
        activations_overhead_gb=overhead_gb,
        total_gb=weights_gb + kv_gb + overhead_gb,
        method="analytic",
        notes=notes,
        per_gpu_gb=per_gpu,
        n_gpus=n_gpus,
        sequences_in_flight=in_flight,
        sequence_len_tokens=seq_len,
    )


def weights_bytes(arch: Any, precision: str) -> float:
    """Bytes of the weights; quantised precisions keep embeddings/lm_head at 16-bit."""
    per_param = BYTES_PER_PARAM[precision]
    if precision not in QUANTISED:
        return float(arch.n_params * per_param)
    blocks = arch.n_params_non_embedding
    return float(blocks * per_param + (arch.n_params - blocks) * UNQUANTISED_BYTES)


def weights_precision(cfg: ExperimentConfig) -> str:
    """Storage precision of the weights: pytorch's load_in_4bit/8bit override `precision`."""
    section = cfg.pytorch if cfg.backend == "pytorch" else None
    if section is not None and section.load_in_4bit:
        return "int4"
    if section is not None and section.load_in_8bit:
        return "int8"
    return cfg.precision


def kv_bytes_per_element(cfg: ExperimentConfig) -> float:
    """KV-cache element size: the activation dtype (bf16 for quantised weights)."""
    vllm_kv = cfg.vllm.kv_cache_dtype if cfg.vllm is not None else None
    if cfg.backend == "vllm" and vllm_kv is not None and vllm_kv.startswith("fp8"):
        return 1.0
    return UNQUANTISED_BYTES if cfg.precision in QUANTISED else BYTES_PER_PARAM[cfg.precision]


def kv_cache_bytes(
    arch: Any, seq_len_tokens: int, sequences: int, bytes_per_element: float
) -> float:
    """2 × layers × KV heads × head_dim × tokens × sequences × bytes."""
    per_token = 2 * arch.n_layers * arch.n_kv_heads * arch.head_dim * bytes_per_element
    return float(per_token * seq_len_tokens * sequences)


def sequence_len_tokens(cfg: ExperimentConfig) -> int:
    """Longest sequence the cache must hold: input + output tokens."""
    if isinstance(cfg.dataset, SyntheticDatasetConfig):
        input_len = min(cfg.dataset.input_len, cfg.max_input_tokens)
        return input_len + min(cfg.dataset.output_len, cfg.max_output_tokens)
    return cfg.max_input_tokens + cfg.max_output_tokens


def sequences_in_flight(cfg: ExperimentConfig, notes: list[str]) -> int:
    """Sequences whose KV cache is held at once (batch × beams, capped at n)."""
    section = cfg.backend_section
    configured = {
        "pytorch": getattr(section, "batch_size", None),
        "vllm": getattr(section, "max_num_seqs", None),
        "tensorrt": getattr(section, "max_batch_size", None),
    }[cfg.backend]
    if configured is None:
        configured = DEFAULT_CONCURRENCY[cfg.backend]
        notes.append(f"{cfg.backend} concurrency not set: assumed {configured} (backend default)")
    beams = cfg.decoder.num_beams or 1
    return min(configured, cfg.n) * beams


def model_parallel_gpus(cfg: ExperimentConfig) -> int:
    """GPUs one model is split across (tensor × pipeline parallel); 1 otherwise."""
    section = cfg.backend_section
    if cfg.backend == "vllm":
        tp = getattr(section, "tensor_parallel_size", None) or 1
        pp = getattr(section, "pipeline_parallel_size", None) or 1
        return int(tp * pp)
    if cfg.backend == "tensorrt":
        return int(
            (getattr(section, "tp_size", None) or 1) * (getattr(section, "pp_size", None) or 1)
        )
    return 1
