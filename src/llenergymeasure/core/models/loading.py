"""Load a causal LM and its tokenizer for the pytorch backend (torch imported lazily).

``weights: random`` builds the architecture from the catalogue or a local ``config.json`` and
initialises it directly on the target device (no download, identical compute cost);
``weights: pretrained`` loads a local directory or a Hub id, offline first, and fails fast
with a ConfigError when the model is not cached and the Hub cannot be reached.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

from llenergymeasure.exceptions import BackendNotInstalledError, ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import (
        BitsAndBytesConfig,
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

    from llenergymeasure.config.models import ExperimentConfig

HUB_PROBE_TIMEOUT_S = 2.0
_QUANTISED = {"int8": "8bit", "int4": "4bit"}


# ---- dtype / quantisation ------------------------------------------------------------------
def torch_dtype_for(precision: str) -> torch.dtype:
    """The torch dtype of weights/activations for ``precision`` (bnb precisions compute in bf16)."""
    import torch

    return {
        "fp32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
        "int8": torch.bfloat16,
        "int4": torch.bfloat16,
    }[precision]


def quantisation_mode(config: ExperimentConfig) -> str | None:
    """``"8bit"``/``"4bit"`` when bitsandbytes quantisation is requested, else None."""
    section = config.pytorch
    if section is not None and section.load_in_8bit:
        return "8bit"
    if section is not None and section.load_in_4bit:
        return "4bit"
    return _QUANTISED.get(config.precision)


def bnb_config(mode: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """A BitsAndBytesConfig for ``mode``; BackendNotInstalledError when bitsandbytes is missing."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise BackendNotInstalledError(
            f"{mode} quantisation needs bitsandbytes: pip install bitsandbytes "
            '(or pip install "llenergymeasure[pytorch]" bitsandbytes); it runs on CUDA only'
        )
    from transformers import BitsAndBytesConfig

    # transformers leaves the constructor unannotated: say what it returns
    new_config = cast("Callable[..., BitsAndBytesConfig]", BitsAndBytesConfig)
    if mode == "8bit":
        return new_config(load_in_8bit=True)
    return new_config(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
    )


# ---- entry point ---------------------------------------------------------------------------
def load_model_and_tokenizer(
    config: ExperimentConfig, device: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, on ``device`` unless a device_map shards it) and a left-padding tokenizer."""
    random_weights = effective_weights(config) == "random"
    if random_weights:
        model, tokenizer = _load_random(config, device, dtype)
    else:
        model, tokenizer = _load_pretrained(config, device, dtype)
    set_eval_mode = cast("Callable[[], object]", model.eval)  # unannotated in transformers
    set_eval_mode()
    _align_special_tokens(model, tokenizer, random_weights=random_weights)
    return model, tokenizer


def effective_weights(config: ExperimentConfig) -> str:
    """``weights`` with its default resolved (random for catalogue names)."""
    return config.effective_weights


def _model_kwargs(config: ExperimentConfig, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """from_pretrained kwargs: dtype, attention implementation, quantisation, device map."""
    kwargs: dict[str, Any] = {"dtype": dtype}
    section = config.pytorch
    if section is not None and section.attn_implementation:
        kwargs["attn_implementation"] = section.attn_implementation
    mode = quantisation_mode(config)
    if mode is not None:
        if not device.startswith("cuda"):
            raise ConfigError(
                f"precision {config.precision} (bitsandbytes {mode}) runs on CUDA only: "
                "use fp32/fp16/bf16 on CPU"
            )
        kwargs["quantization_config"] = bnb_config(mode, dtype)
    device_map = section.device_map if section is not None else None
    kwargs["device_map"] = device_map or (device if mode is not None else None)
    return kwargs


# ---- random weights ------------------------------------------------------------------------
def architecture_config(model: str) -> PretrainedConfig:
    """A transformers config for ``model``: catalogue name, local dir or config.json path.

    A Hub id works only when its config is already cached (no network).
    """
    from transformers import AutoConfig

    from llenergymeasure.catalogue.architectures import is_catalogued, resolve_architecture

    if is_catalogued(model):
        spec = resolve_architecture(model)
        assert spec is not None
        return AutoConfig.for_model(spec.model_type, **spec.hf_config_dict())
    path = Path(model).expanduser()
    if path.exists():
        resolve_architecture(model)  # raises a clear ConfigError for a dir without config.json
        return cast(
            "PretrainedConfig",
            AutoConfig.from_pretrained(str(path.parent if path.is_file() else path)),
        )
    try:
        return cast("PretrainedConfig", AutoConfig.from_pretrained(model, local_files_only=True))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"model {model!r}: weights: random needs its architecture, but it is neither a "
            "built-in architecture, a local directory/config.json, nor a cached Hub config "
            "-> use a catalogue name (llem config lists them) or a local config.json"
        ) from e


def _load_random(
    config: ExperimentConfig, device: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Random-initialised model built on the target device, with the offline tokenizer."""
    import torch

    from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer

    hf_config = architecture_config(config.model)
    tokenizer = load_offline_tokenizer()
    check_vocab(config.model, _vocab_size(hf_config), len(tokenizer))
    kwargs = _model_kwargs(config, device, dtype)
    torch.manual_seed(config.random_seed)
    if kwargs.get("quantization_config") is not None or kwargs.get("device_map"):
        return _random_via_checkpoint(hf_config, kwargs, device, dtype), tokenizer
    attn = (
        {"attn_implementation": kwargs["attn_implementation"]}
        if "attn_implementation" in kwargs
        else {}
    )
    with torch.device(device):  # parameters are created (and initialised) on the device
        model = _model_from_config(hf_config, dtype=dtype, **attn)
    return model, tokenizer


def _random_via_checkpoint(
    hf_config: PretrainedConfig, kwargs: dict[str, Any], device: str, dtype: torch.dtype
) -> PreTrainedModel:
    """Quantised or sharded random model: bitsandbytes and device_map need from_pretrained, so
    the random model is written to a temporary checkpoint and loaded back through it."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory(prefix="llem-random-") as tmp:
        model = _model_from_config(hf_config, dtype=dtype)
        model.save_pretrained(tmp)
        del model
        return AutoModelForCausalLM.from_pretrained(tmp, **kwargs)


def _model_from_config(hf_config: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_config`` (random initialisation), its result typed
    (transformers leaves it unannotated)."""
    from transformers import AutoModelForCausalLM

    from_config = cast("Callable[..., PreTrainedModel]", AutoModelForCausalLM.from_config)
    return from_config(hf_config, **kwargs)


def _vocab_size(hf_config: PretrainedConfig) -> int:
    """The text model's vocabulary size."""
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    return int(text.vocab_size)


def check_vocab(model: str, model_vocab: int, tokenizer_vocab: int) -> None:
    """ConfigError when the tokenizer can emit ids the model has no embedding for."""
    if model_vocab < tokenizer_vocab:
        raise ConfigError(
            f"model {model!r} has a vocabulary of {model_vocab} tokens, smaller than the offline "
            f"tokenizer's {tokenizer_vocab}: token ids would be out of range -> use an "
            f"architecture with vocab_size >= {tokenizer_vocab} or weights: pretrained"
        )


# ---- pretrained ----------------------------------------------------------------------------
def _load_pretrained(
    config: ExperimentConfig, device: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """From a local directory, or a Hub id (cache first, then the Hub if reachable)."""
    source = config.model
    local = Path(source).expanduser()
    if local.exists():
        return _from_pretrained(str(local), config, device, dtype, local_files_only=True)
    try:
        return _from_pretrained(source, config, device, dtype, local_files_only=True)
    except OSError as cached_error:
        if not hub_reachable():
            raise ConfigError(
                f"model {source!r} is not cached and the hub cannot be reached; "
                "use weights: random or a local path"
            ) from cached_error
    return _from_pretrained(source, config, device, dtype, local_files_only=False)


def _from_pretrained(
    source: str,
    config: ExperimentConfig,
    device: str,
    dtype: torch.dtype,
    local_files_only: bool,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Tokenizer first (cheap, fails fast when absent), then the weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        source, local_files_only=local_files_only, padding_side="left"
    )
    kwargs = _model_kwargs(config, device, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        source, local_files_only=local_files_only, **kwargs
    )
    if kwargs.get("device_map") is None:
        model = model.to(device)  # type: ignore[arg-type]  # transformers stub quirk
    return model, tokenizer


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """False at once under HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE, else a TCP probe of the Hub."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _env_true(name: str) -> bool:
    """True for the usual truthy spellings of an environment flag."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _align_special_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, random_weights: bool
) -> None:
    """Left padding and a pad token (eos if missing). A random-weight model takes the offline
    tokenizer's eos/pad ids (its catalogue ids belong to another tokenizer); a pretrained
    model keeps its own generation config (it may list several eos ids)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = model.generation_config
    if random_weights:
        gen.eos_token_id = tokenizer.eos_token_id
        gen.bos_token_id = tokenizer.bos_token_id
    if random_weights or gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
