"""Built-in catalogue of model architectures, and shape facts read from any ``config.json``.

Pure Python on purpose: the memory estimator, the FLOPs code and ``--dry-run`` need parameter
counts and shapes without importing torch or transformers. An :class:`ArchitectureSpec` holds

* ``config``: the dict that ``transformers.AutoConfig.for_model(model_type, **config)`` accepts
  (same keys as a Hugging Face ``config.json``), so random-weight models can be built offline;
* derived facts (``n_layers``, ``hidden``, ``n_heads``, ``n_kv_heads``, ``head_dim``, ``vocab``,
  ``max_position_embeddings``) and parameter counts computed from shapes
  (:attr:`ArchitectureSpec.n_params`, :attr:`ArchitectureSpec.n_params_non_embedding`).

Parameter counts are exact for the families listed in ``EXACT_FAMILIES`` (checked in the unit
tests against real transformers models); other decoder-only ``model_type`` values are counted
with the Llama formula and say so in :attr:`ArchitectureSpec.param_count_method`.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llenergymeasure.catalogue.data import (
    CATALOGUE_CONFIGS,
    OFFLINE_BOS_ID,
    OFFLINE_EOS_ID,
    OFFLINE_PAD_ID,
    OFFLINE_TOKENIZER_VOCAB_SIZE,
    OFFLINE_UNK_ID,
)
from llenergymeasure.exceptions import ConfigError

__all__ = [
    "EXACT_FAMILIES",
    "OFFLINE_BOS_ID",
    "OFFLINE_EOS_ID",
    "OFFLINE_PAD_ID",
    "OFFLINE_TOKENIZER_VOCAB_SIZE",
    "OFFLINE_UNK_ID",
    "ArchitectureSpec",
    "UnknownArchitectureError",
    "get_architecture",
    "is_catalogue_name",
    "is_catalogued",
    "list_architectures",
    "resolve_architecture",
]

#: Families whose parameter count is computed exactly from shapes.
EXACT_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2"})
_GPT2_FAMILIES = frozenset({"gpt2"})


@dataclass(frozen=True)
class ArchitectureSpec:
    """Shapes and parameter counts of one decoder-only transformer architecture."""

    name: str
    model_type: str
    description: str
    config: Mapping[str, Any] = field(repr=False)
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_theta: float | None = None
    sliding_window: int | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_hf_config_dict(
        cls, d: Mapping[str, Any], name: str | None = None, description: str = ""
    ) -> ArchitectureSpec:
        """Read shapes from a Hugging Face ``config.json`` dict (any decoder-only model).

        Raises ``ValueError`` naming the missing key when the dict lacks a needed shape.
        """
        model_type = str(d.get("model_type", "")).lower()
        if not model_type:
            raise ValueError("config has no 'model_type': is this a transformers config.json?")
        if model_type in _GPT2_FAMILIES:
            return cls._from_gpt2_dict(d, model_type, name, description)
        hidden = _need(d, "hidden_size", "n_embd", "d_model")
        n_heads = _need(d, "num_attention_heads", "n_head")
        n_kv = d.get("num_key_value_heads") or n_heads
        return cls(
            name=name or str(d.get("_name_or_path") or model_type),
            model_type=model_type,
            description=description,
            config=copy.deepcopy(dict(d)),
            n_layers=_need(d, "num_hidden_layers", "n_layer"),
            hidden=hidden,
            n_heads=n_heads,
            n_kv_heads=int(n_kv),
            head_dim=int(d.get("head_dim") or hidden // n_heads),
            intermediate=_need(d, "intermediate_size"),
            vocab=_need(d, "vocab_size"),
            max_position_embeddings=_need(d, "max_position_embeddings"),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            rope_theta=_rope_theta(d),
            sliding_window=d.get("sliding_window") if d.get("use_sliding_window", True) else None,
        )

    @classmethod
    def _from_gpt2_dict(
        cls, d: Mapping[str, Any], model_type: str, name: str | None, description: str
    ) -> ArchitectureSpec:
        """GPT-2 family: learned positions, fused QKV with biases, LayerNorm, ungated MLP."""
        hidden = _need(d, "n_embd", "hidden_size")
        n_heads = _need(d, "n_head", "num_attention_heads")
        return cls(
            name=name or str(d.get("_name_or_path") or model_type),
            model_type=model_type,
            description=description,
            config=copy.deepcopy(dict(d)),
            n_layers=_need(d, "n_layer", "num_hidden_layers"),
            hidden=hidden,
            n_heads=n_heads,
            n_kv_heads=n_heads,
            head_dim=hidden // n_heads,
            intermediate=int(d.get("n_inner") or 4 * hidden),
            vocab=_need(d, "vocab_size"),
            max_position_embeddings=_need(d, "n_positions", "max_position_embeddings"),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
        )

    # ---- parameter counts ---------------------------------------------------------------
    @property
    def is_gpt2_family(self) -> bool:
        """True for GPT-2-style blocks (LayerNorm, learned positions, biases everywhere)."""
        return self.model_type in _GPT2_FAMILIES

    @property
    def param_count_method(self) -> str:
        """``exact`` for the families counted layer by layer, else ``llama-like estimate``."""
        return "exact" if self.model_type in EXACT_FAMILIES else "llama-like estimate"

    @property
    def n_params_embedding(self) -> int:
        """Input embedding parameters: token embedding plus learned position embedding."""
        positions = self.max_position_embeddings * self.hidden if self.is_gpt2_family else 0
        return self.vocab * self.hidden + positions

    @property
    def n_params_lm_head(self) -> int:
        """Weights of the output projection ``hidden -> vocab`` (its matmul runs every token,
        tied or not; it adds to :attr:`n_params` only when untied)."""
        return self.vocab * self.hidden

    @property
    def n_params_per_layer(self) -> int:
        """Parameters of one transformer block (attention, MLP, norms)."""
        if self.is_gpt2_family:
            return _gpt2_block_params(self.hidden, self.intermediate)
        return _attention_params(self) + _mlp_params(self) + _norm_params(self)

    @property
    def n_params_non_embedding(self) -> int:
        """Parameters of the blocks and final norm: excludes token/position embeddings and the
        lm_head (Kaplan et al. convention). Inference FLOPs per token are about
        ``2 * (n_params_non_embedding + n_params_lm_head)`` plus the attention term."""
        final_norm = 2 * self.hidden if self.is_gpt2_family else self.hidden
        return self.n_layers * self.n_params_per_layer + final_norm

    @property
    def n_params(self) -> int:
        """Total parameter count, as ``sum(p.numel() for p in model.parameters())``."""
        head = 0 if self.tie_word_embeddings else self.n_params_lm_head
        return self.n_params_embedding + self.n_params_non_embedding + head

    # ---- other derived facts ------------------------------------------------------------
    def kv_cache_bytes_per_token(self, bytes_per_element: float) -> float:
        """KV-cache bytes one token occupies across all layers (K and V)."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_element

    def weights_bytes(self, bytes_per_param: float) -> float:
        """Bytes of all weights at ``bytes_per_param`` (2 for bf16/fp16, 4 for fp32)."""
        return self.n_params * bytes_per_param

    def hf_config_dict(self) -> dict[str, Any]:
        """A fresh copy of the config dict, safe to pass to ``AutoConfig.for_model``."""
        d = copy.deepcopy(dict(self.config))
        d.pop("model_type", None)
        return d

    def summary(self) -> dict[str, Any]:
        """The derived facts as a plain dict (for ``--dry-run`` and result metadata)."""
        return {
            "name": self.name,
            "model_type": self.model_type,
            "n_params": self.n_params,
            "n_params_non_embedding": self.n_params_non_embedding,
            "n_layers": self.n_layers,
            "hidden": self.hidden,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "vocab": self.vocab,
            "max_position_embeddings": self.max_position_embeddings,
            "param_count_method": self.param_count_method,
        }


# ---- counting helpers (pure functions of the spec) ----------------------------------------
def _attention_params(s: ArchitectureSpec) -> int:
    """q/k/v/o projections with grouped-query attention and the family's biases."""
    q_out, kv_out = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    weights = s.hidden * (q_out + 2 * kv_out) + q_out * s.hidden
    cfg = s.config
    if s.model_type == "qwen2":  # bias on q, k, v only
        return weights + q_out + 2 * kv_out
    if cfg.get("attention_bias", False):  # llama-style flag: bias on all four projections
        weights += q_out + 2 * kv_out + s.hidden
    if s.model_type == "qwen3":  # per-head RMSNorm on q and k
        weights += 2 * s.head_dim
    return weights


def _mlp_params(s: ArchitectureSpec) -> int:
    """Gated (SwiGLU) MLP: gate, up and down projections (plus biases if ``mlp_bias``)."""
    n = 3 * s.hidden * s.intermediate
    if s.config.get("mlp_bias", False):
        n += 2 * s.intermediate + s.hidden
    return n


def _norm_params(s: ArchitectureSpec) -> int:
    """Two RMSNorm weight vectors per block (before attention, before MLP)."""
    return 2 * s.hidden


def _gpt2_block_params(hidden: int, inner: int) -> int:
    """GPT-2 block: 2 LayerNorms, fused QKV + output projection, 2-layer MLP; all with biases."""
    layer_norms = 2 * 2 * hidden
    attention = hidden * 3 * hidden + 3 * hidden + hidden * hidden + hidden
    mlp = hidden * inner + inner + inner * hidden + hidden
    return layer_norms + attention + mlp


def _need(d: Mapping[str, Any], *keys: str) -> int:
    """The first present key's value as int; ValueError naming the keys if none is present."""
    for key in keys:
        if d.get(key) is not None:
            return int(d[key])
    raise ValueError(f"config lacks {' / '.join(keys)} (needed to count parameters)")


def _rope_theta(d: Mapping[str, Any]) -> float | None:
    """RoPE base from ``rope_theta`` (transformers 4.x) or ``rope_parameters`` (5.x)."""
    if d.get("rope_theta") is not None:
        return float(d["rope_theta"])
    params = d.get("rope_parameters")
    if isinstance(params, Mapping) and params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    return None


def list_architectures() -> list[str]:
    """Names of the catalogued architectures, in catalogue order (smallest first)."""
    return list(CATALOGUE_CONFIGS)


def get_architecture(name: str) -> ArchitectureSpec:
    """The catalogued architecture ``name`` (case-insensitive).

    Raises ``UnknownArchitectureError`` (a ``KeyError`` and a ``ConfigError``) with a
    "did you mean" suggestion for unknown names.
    """
    key = name.strip().lower()
    if key not in CATALOGUE_CONFIGS:
        raise UnknownArchitectureError(name)
    description, config = CATALOGUE_CONFIGS[key]
    return ArchitectureSpec.from_hf_config_dict(config, name=key, description=description)


def is_catalogued(name: str) -> bool:
    """True when ``name`` is a catalogue entry (case-insensitive)."""
    return name.strip().lower() in CATALOGUE_CONFIGS


#: Alias used by ``config/models.py``.
is_catalogue_name = is_catalogued


def resolve_architecture(model: str) -> ArchitectureSpec | None:
    """Shapes for ``model`` without touching the network.

    ``model`` may be a catalogue name, a local directory holding ``config.json``, or a path to
    a ``config.json`` file. Returns ``None`` for anything else (a Hub id: its config is not
    available offline). A local directory without ``config.json`` or an unreadable config
    raises ``ConfigError`` with what to do.
    """
    if is_catalogued(model):
        return get_architecture(model)
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise _config_error(f"{model} is a directory without config.json")
    elif not (path.is_file() and path.suffix == ".json"):
        return None
    return _spec_from_file(path)


def _spec_from_file(path: Path) -> ArchitectureSpec:
    """Parse a local config.json into a spec, translating errors to ConfigError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise _config_error(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise _config_error(f"{path} does not hold a JSON object")
    try:
        return ArchitectureSpec.from_hf_config_dict(data, name=str(path.parent))
    except ValueError as e:
        raise _config_error(f"{path}: {e}") from e


def _config_error(message: str) -> ConfigError:
    """A ConfigError whose fix lists the ways to name a model."""
    return ConfigError(
        f"model: {message} -> give a Hugging Face model directory (with config.json), "
        f"a config.json path, a Hub id, or one of: {', '.join(list_architectures())}"
    )


def _did_you_mean(name: str) -> str:
    """Closest catalogue names to ``name``, as a sentence fragment (may be empty)."""
    close = difflib.get_close_matches(name.strip().lower(), list_architectures(), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class UnknownArchitectureError(KeyError, ConfigError):
    """An architecture name not in the catalogue (both ``KeyError`` and ``ConfigError``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.message = (
            f"unknown architecture {name!r}.{_did_you_mean(name)} "
            f"Known: {', '.join(list_architectures())}."
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        """The message itself (KeyError would show its repr)."""
        return self.message
