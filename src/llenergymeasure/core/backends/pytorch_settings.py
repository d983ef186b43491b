"""How an ExperimentConfig maps onto transformers for the pytorch backend (device, seeds,
GenerationConfig, static cache and the library's own compile path). torch and transformers
are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Any

from llenergymeasure.config.backend_configs import PyTorchConfig
from llenergymeasure.exceptions import ConfigError

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel

    from llenergymeasure.config.models import ExperimentConfig


def section_of(config: ExperimentConfig) -> PyTorchConfig:
    """The pytorch section, or an all-default one."""
    return config.pytorch or PyTorchConfig()


#: ``pytorch.sdpa_backends`` names -> ``torch.nn.attention.SDPBackend`` members.
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


def attention_kernels(section: PyTorchConfig) -> contextlib.AbstractContextManager[Any]:
    """The SDPA kernels ``pytorch.sdpa_backends`` allows, as a context around ``generate``
    (warm-up and window alike); PyTorch's own choice when unset."""
    if not section.sdpa_backends:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[b]) for b in section.sdpa_backends])


def uses_static_cache(section: PyTorchConfig) -> bool:
    """Static cache is requested directly, or implied by torch_compile."""
    return section.cache_implementation == "static" or bool(section.torch_compile)


def resolve_device(config: ExperimentConfig) -> str:
    """``cuda:<first of gpus>`` / ``cpu``; auto picks CUDA when available."""
    import torch

    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise ConfigError("device: cuda was requested but torch sees no CUDA device")
    index = config.gpus[0] if config.gpus else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"gpus: index {index} is not visible (torch sees {torch.cuda.device_count()})"
        )
    return f"cuda:{index}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from config.random_seed."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_generation_config(
    model: PreTrainedModel, config: ExperimentConfig, device: str
) -> GenerationConfig:
    """The model's generation config with the experiment's decoder and cache settings."""
    gen = copy.deepcopy(model.generation_config)
    decoder = config.decoder
    gen.max_new_tokens = config.max_output_tokens
    gen.do_sample = decoder.strategy == "sample"
    gen.num_beams = decoder.num_beams or (4 if decoder.strategy == "beam_search" else 1)
    if decoder.strategy != "sample":  # pretrained defaults (e.g. temperature 0.6) do not apply
        gen.temperature, gen.top_p, gen.top_k = None, None, None
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if getattr(decoder, name) is not None:
            setattr(gen, name, getattr(decoder, name))
    _apply_cache_settings(gen, section_of(config), device)
    return gen


def _apply_cache_settings(gen: GenerationConfig, section: PyTorchConfig, device: str) -> None:
    """Static cache and transformers' auto-compile (never torch.compile around forward)."""
    from transformers import CompileConfig

    if not uses_static_cache(section):
        return
    gen.cache_implementation = "static"
    if section.torch_compile is False:
        gen.disable_compile = True
    elif section.torch_compile:
        compile_config = CompileConfig()
        if not device.startswith("cuda"):
            # asked for explicitly: honour it on CPU too (transformers' private flag)
            compile_config._compile_all_devices = True  # type: ignore[assignment]
        gen.compile_config = compile_config


def fix_output_length(gen: GenerationConfig, config: ExperimentConfig, max_new: int) -> None:
    """ignore_eos: min_new_tokens = max_new_tokens masks EOS, so every request runs the full
    length; otherwise the decoder's own min_new_tokens (if any)."""
    decoder = config.decoder
    gen.min_new_tokens = max_new if decoder.ignore_eos else decoder.min_new_tokens
