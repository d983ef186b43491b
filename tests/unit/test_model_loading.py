"""Model loading: random weights from the catalogue or a config.json, pretrained from a path,
offline behaviour for Hub ids (real tiny models on CPU)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from llenergymeasure.catalogue.architectures import get_architecture
from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.models.loading import (
    check_vocab,
    hub_reachable,
    load_model_and_tokenizer,
    torch_dtype_for,
)
from llenergymeasure.exceptions import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(model: str, **kw: object) -> tuple[PreTrainedModel, object]:
    config = ExperimentConfig(model=model, **kw)  # type: ignore[arg-type]
    return load_model_and_tokenizer(config, "cpu", torch_dtype_for(config.precision))


def _tiny_config_dict(vocab: int = 8000) -> dict[str, object]:
    cfg = dict(get_architecture("tiny-llama").config)
    cfg["vocab_size"] = vocab
    return cfg


def test_random_catalogue_model_matches_the_catalogue_shapes() -> None:
    model, tokenizer = _load("tiny-llama", weights="random", precision="bf16")
    spec = get_architecture("tiny-llama")
    assert sum(p.numel() for p in model.parameters()) == spec.n_params
    assert model.dtype == torch.bfloat16
    assert model.device.type == "cpu"
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_weights_default_to_random_for_catalogue_names() -> None:
    a, _ = _load("tiny-llama", precision="fp32", random_seed=3)
    b, _ = _load("tiny-llama", weights="random", precision="fp32", random_seed=3)
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)


def test_random_init_follows_the_seed() -> None:
    a, _ = _load("tiny-llama", weights="random", precision="fp32", random_seed=1)
    b, _ = _load("tiny-llama", weights="random", precision="fp32", random_seed=1)
    c, _ = _load("tiny-llama", weights="random", precision="fp32", random_seed=2)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


@pytest.mark.parametrize("as_file", [False, True])
def test_random_weights_from_a_local_config(tmp_path: Path, as_file: bool) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_tiny_config_dict(vocab=9000)))
    target = tmp_path / "config.json" if as_file else tmp_path
    model, _ = _load(str(target), weights="random", precision="fp32")
    assert model.config.vocab_size == 9000


def test_directory_without_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"without config\.json"):
        _load(str(tmp_path), weights="random", precision="fp32")


def test_vocab_smaller_than_the_tokenizer_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_tiny_config_dict(vocab=100)))
    with pytest.raises(ConfigError, match="vocabulary of 100 tokens"):
        _load(str(tmp_path), weights="random", precision="fp32")


def test_catalogue_vocabularies_fit_the_offline_tokenizer() -> None:
    n_tokens = len(load_offline_tokenizer())
    for name in ("tiny-llama", "tiny-gpt2", "gpt2", "llama-3.2-1b", "mistral-7b"):
        check_vocab(name, get_architecture(name).vocab, n_tokens)
    with pytest.raises(ConfigError, match="vocab_size >= "):
        check_vocab("small", n_tokens - 1, n_tokens)


def test_pretrained_from_a_local_path_reproduces_the_saved_model(tmp_path: Path) -> None:
    saved, tokenizer = _load("tiny-llama", weights="random", precision="fp32", random_seed=7)
    saved.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = _load(str(tmp_path), weights="pretrained", precision="fp32")
    ids = torch.tensor([tokenizer("energy per token")["input_ids"]])
    with torch.inference_mode():
        kw = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
        assert torch.equal(saved.generate(ids, **kw), loaded.generate(ids, **kw))
        assert torch.equal(saved(ids).logits, loaded(ids).logits)
    assert loaded_tok.padding_side == "left"


def test_pretrained_tokenizer_without_pad_gets_eos(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_config(_gpt2_config())
    model.save_pretrained(tmp_path)
    tokenizer = load_offline_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    _, loaded_tok = _load(str(tmp_path), weights="pretrained", precision="fp32")
    assert loaded_tok.pad_token_id == loaded_tok.eos_token_id


def _gpt2_config() -> object:
    from transformers import AutoConfig

    spec = get_architecture("tiny-gpt2")
    return AutoConfig.for_model(spec.model_type, **spec.hf_config_dict())


def test_uncached_hub_id_offline_fails_fast_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="not cached and the hub cannot be reached"):
        _load("no-such-org/no-such-model-llem", weights="pretrained", precision="fp32")
    assert time.perf_counter() - start < 10.0


def test_random_weights_for_an_unknown_hub_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="weights: random needs its architecture"):
        _load("no-such-org/no-such-model-llem", weights="random", precision="fp32")


def test_hub_is_unreachable_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False


def test_quantisation_on_cpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CUDA only"):
        _load("tiny-llama", weights="random", precision="int8")


def test_attention_implementation_is_applied() -> None:
    model, _ = _load(
        "tiny-llama", weights="random", precision="fp32", pytorch={"attn_implementation": "eager"}
    )
    assert model.config._attn_implementation == "eager"
