"""Offline BPE tokenizer: shipped file, special tokens, padding, round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llenergymeasure.catalogue.architectures import (
    OFFLINE_BOS_ID,
    OFFLINE_EOS_ID,
    OFFLINE_PAD_ID,
    OFFLINE_TOKENIZER_VOCAB_SIZE,
    OFFLINE_UNK_ID,
    get_architecture,
)
from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer, offline_tokenizer_path

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok() -> Any:
    return load_offline_tokenizer()


def test_shipped_file_is_small_and_has_catalogue_vocab(tok: Any) -> None:
    assert offline_tokenizer_path().stat().st_size < 1_000_000
    assert len(tok) == OFFLINE_TOKENIZER_VOCAB_SIZE == get_architecture("tiny-llama").vocab


def test_special_token_ids_match_catalogue(tok: Any) -> None:
    ids = (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id)
    assert ids == (OFFLINE_PAD_ID, OFFLINE_BOS_ID, OFFLINE_EOS_ID, OFFLINE_UNK_ID)


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "def f(x):\n    return x ** 2",
        "Résumé — naïve café 日本語 🙂",
        "  spaces  ",
    ],
)
def test_round_trip_is_lossless_and_starts_with_bos(tok: Any, text: str) -> None:
    ids = tok(text)["input_ids"]
    assert ids[0] == OFFLINE_BOS_ID
    assert OFFLINE_UNK_ID not in ids  # byte-level: nothing is unknown
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_batch_pads_on_the_left(tok: Any) -> None:
    batch = tok(["hi", "a much longer prompt than the first"], padding=True)
    short_ids, short_mask = batch["input_ids"][0], batch["attention_mask"][0]
    assert short_ids[0] == OFFLINE_PAD_ID and short_mask[0] == 0
    assert short_mask[-1] == 1 and short_ids[-1] != OFFLINE_PAD_ID
    assert tok.padding_side == "left"


def test_ids_fit_every_catalogue_model(tok: Any) -> None:
    from llenergymeasure.catalogue.architectures import list_architectures

    assert max(tok.get_vocab().values()) < min(
        get_architecture(n).vocab for n in list_architectures()
    )


def test_builtin_prompts_compress_to_words(tok: Any) -> None:
    """Trained on the prompts: English text averages several characters per token."""
    from llenergymeasure.datasets.loader import builtin_prompts_path

    lines = builtin_prompts_path().read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["prompt"] for line in lines][:200]
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert sum(len(t) for t in texts) / n_tokens > 3.5


def test_each_load_returns_independent_object(tok: Any) -> None:
    other = load_offline_tokenizer()
    other.padding_side = "right"
    assert tok.padding_side == "left"


def test_generates_with_tiny_llama(tok: Any) -> None:
    """The tokenizer drives a real random-weight tiny-llama end to end."""
    torch = pytest.importorskip("torch")
    import transformers

    spec = get_architecture("tiny-llama")
    cfg = transformers.AutoConfig.for_model(spec.model_type, **spec.hf_config_dict())
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    enc = tok(["short", "a somewhat longer prompt"], padding=True, return_tensors="pt")
    out = model.generate(
        **enc, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id
    )
    assert out.shape == (2, enc["input_ids"].shape[1] + 4)
