"""Architecture catalogue: parameter counts from shapes match real transformers models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.catalogue.architectures import (
    OFFLINE_TOKENIZER_VOCAB_SIZE,
    ArchitectureSpec,
    UnknownArchitectureError,
    get_architecture,
    list_architectures,
    resolve_architecture,
)
from llenergymeasure.exceptions import ConfigError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = ["tiny-llama", "tiny-llama-hd64", "tiny-gpt2"]
BIG = [n for n in list_architectures() if n not in TINY]


def _build(spec: ArchitectureSpec, device: str) -> Any:
    """A real transformers causal LM with random weights for ``spec`` on ``device``."""
    cfg = transformers.AutoConfig.for_model(spec.model_type, **spec.hf_config_dict())
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(cfg)


def _numel(model: Any) -> int:
    """Total parameters as transformers counts them (shared tensors once)."""
    return sum(p.numel() for p in model.parameters())


def _embedding_numel(model: Any) -> int:
    """Token (+ learned position) embedding parameters of a real model."""
    n = model.get_input_embeddings().weight.numel()
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    return n + (wpe.weight.numel() if wpe is not None else 0)


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_param_count_matches_instantiated_model(name: str) -> None:
    spec = get_architecture(name)
    model = _build(spec, "cpu")
    assert spec.n_params == _numel(model)
    assert spec.n_params_embedding == _embedding_numel(model)


@pytest.mark.parametrize("name", BIG)
def test_big_models_param_count_matches_meta_instantiation(name: str) -> None:
    spec = get_architecture(name)
    model = _build(spec, "meta")
    assert spec.n_params == _numel(model)
    assert spec.n_params_embedding == _embedding_numel(model)


@pytest.mark.parametrize(
    ("model_type", "extra"),
    [
        ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
        ("mistral", {"head_dim": 24}),
        ("qwen2", {"tie_word_embeddings": False}),
        ("qwen3", {"head_dim": 32, "tie_word_embeddings": True}),
        ("gpt2", {"n_inner": 100}),
    ],
)
def test_variants_count_exactly(model_type: str, extra: dict[str, Any]) -> None:
    """Biases, explicit head_dim, per-head q/k norms, custom MLP width are all counted."""
    common = {"vocab_size": 300, "max_position_embeddings": 128}
    if model_type == "gpt2":
        d = {"n_embd": 48, "n_layer": 2, "n_head": 4, "n_positions": 128, "vocab_size": 300}
    else:
        d = {
            **common,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        }
    d.update(extra)
    cfg = transformers.AutoConfig.for_model(model_type, **d)
    spec = ArchitectureSpec.from_hf_config_dict(cfg.to_dict())
    assert spec.param_count_method == "exact"
    assert spec.n_params == _numel(transformers.AutoModelForCausalLM.from_config(cfg))


def test_llama_3_2_1b_shapes_are_the_published_ones() -> None:
    spec = get_architecture("llama-3.2-1b")
    assert (spec.hidden, spec.n_layers, spec.n_heads, spec.n_kv_heads) == (2048, 16, 32, 8)
    assert (spec.intermediate, spec.vocab, spec.head_dim) == (8192, 128256, 64)
    assert spec.tie_word_embeddings and spec.rope_theta == 500000.0


def test_non_embedding_excludes_embeddings_and_head() -> None:
    spec = get_architecture("llama-3.1-8b")
    assert spec.n_params == (
        spec.n_params_non_embedding + spec.n_params_embedding + spec.n_params_lm_head
    )
    tied = get_architecture("llama-3.2-1b")
    assert tied.n_params == tied.n_params_non_embedding + tied.n_params_embedding


def test_kv_cache_bytes_per_token_uses_kv_heads() -> None:
    spec = get_architecture("llama-3.1-8b")
    # 2 (K and V) x 32 layers x 8 kv heads x 128 dims x 2 bytes = 128 KiB per token in bf16
    assert spec.kv_cache_bytes_per_token(2) == 131072


def test_tiny_llama_vocab_equals_offline_tokenizer() -> None:
    assert get_architecture("tiny-llama").vocab == OFFLINE_TOKENIZER_VOCAB_SIZE
    for name in list_architectures():
        assert get_architecture(name).vocab >= OFFLINE_TOKENIZER_VOCAB_SIZE


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(UnknownArchitectureError, match=r"Did you mean 'llama-3\.2-1b'") as err:
        get_architecture("llama-3.2-1")
    assert isinstance(err.value, KeyError) and isinstance(err.value, ConfigError)


def test_names_are_case_insensitive() -> None:
    assert get_architecture("Tiny-Llama").name == "tiny-llama"


def test_resolve_catalogue_dir_file_and_hub_id(tmp_path: Path) -> None:
    spec = get_architecture("tiny-llama")
    cfg = transformers.AutoConfig.for_model(spec.model_type, **spec.hf_config_dict())
    cfg.save_pretrained(tmp_path)
    from_dir = resolve_architecture(str(tmp_path))
    from_file = resolve_architecture(str(tmp_path / "config.json"))
    assert from_dir is not None and from_file is not None
    assert from_dir.n_params == from_file.n_params == spec.n_params
    assert resolve_architecture("tiny-llama") == spec
    assert resolve_architecture("meta-llama/Llama-3.2-1B") is None


def test_resolve_directory_without_config_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"without config\.json"):
        resolve_architecture(str(tmp_path))


def test_resolve_config_missing_shape_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ConfigError, match="num_attention_heads"):
        resolve_architecture(str(path))


def test_unknown_family_is_labelled_estimate() -> None:
    spec = ArchitectureSpec.from_hf_config_dict(
        {
            "model_type": "somefuturelm",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "vocab_size": 100,
            "max_position_embeddings": 64,
        }
    )
    assert spec.param_count_method == "llama-like estimate"
    assert spec.n_kv_heads == 4


def test_import_does_not_load_torch_or_transformers() -> None:
    code = (
        "import sys, llenergymeasure.catalogue.architectures as c; c.get_architecture('gpt2');"
        "print(sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src},
    )
    assert out.stdout.strip() == "[]"
