"""Synthetic prompts: the fast search builds the texts the word-by-word encoding built, and
the study's prompt cache is keyed by everything that makes them, validated, and rebuilt
when anything is off."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer
from llenergymeasure.datasets import synthetic
from llenergymeasure.datasets.cache import cache_path, synthetic_key, tokenizer_fingerprint
from llenergymeasure.datasets.loader import load_prompts
from llenergymeasure.datasets.synthetic import (
    SyntheticSpec,
    count_tokens,
    synthetic_prompts,
    text_with_exact_tokens,
    word_pool,
)


@pytest.fixture(scope="module")
def tok() -> Any:
    return load_offline_tokenizer()


def _reference(spec: SyntheticSpec, tok: Any) -> list[str]:
    """The original method: every step checked on the real encoding."""
    rng = random.Random(spec.seed)
    pool = word_pool(tok)
    return [text_with_exact_tokens(tok, spec.input_len, rng, pool) for _ in range(spec.n)]


@pytest.mark.parametrize(
    "spec",
    [SyntheticSpec(64, 128, 8, 0), SyntheticSpec(16, 512, 4, 7), SyntheticSpec(40, 2, 1, 3)],
)
def test_fast_search_builds_the_same_texts_as_the_real_encoding(
    tok: Any, spec: SyntheticSpec
) -> None:
    texts = [p.text for p in synthetic_prompts(spec, tok)]
    assert texts == _reference(spec, tok)
    assert {count_tokens(tok, t) for t in texts} == {spec.input_len}


class _MiscountingPieces:
    """A tokenizer whose batch calls (the piece counts) are wrong: the fast search's texts
    fail the real check, so every text is built the original way."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.all_special_ids = inner.all_special_ids

    def __len__(self) -> int:
        return len(self._inner)

    def decode(self, ids: list[int]) -> str:
        return str(self._inner.decode(ids))

    def __call__(self, text: Any, **kwargs: Any) -> Any:
        out = self._inner(text, **kwargs)
        if isinstance(text, list) and kwargs.get("add_special_tokens") is False:
            return {"input_ids": [[*ids, 0] for ids in out["input_ids"]]}
        return out


def test_a_tokenizer_whose_pieces_do_not_add_up_falls_back_to_the_real_encoding(
    tok: Any,
) -> None:
    spec = SyntheticSpec(12, 64, 2, 5)
    odd = _MiscountingPieces(tok)
    texts = [p.text for p in synthetic_prompts(spec, odd)]
    assert texts == _reference(spec, odd)
    assert {count_tokens(tok, t) for t in texts} == {spec.input_len}


def _spec_prompts(tmp_path: Path, **spec: int) -> Any:
    dataset = {"input_len": 32, "output_len": 4, "seed": 0, **spec}
    return load_prompts(dataset, dataset.pop("n", 8), cache_dir=tmp_path)


def test_second_load_hits_the_cache_with_the_same_prompts(tmp_path: Path) -> None:
    first = _spec_prompts(tmp_path)
    second = _spec_prompts(tmp_path)
    assert first.summary()["cache"] == "miss" and second.summary()["cache"] == "hit"
    assert list(first) == list(second)
    assert len(list((tmp_path / "prompts").glob("*.json"))) == 1
    assert not list((tmp_path / "prompts").glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("change", [{"seed": 1}, {"n": 9}, {"input_len": 33}, {"output_len": 5}])
def test_a_changed_spec_misses(tmp_path: Path, change: dict[str, int]) -> None:
    _spec_prompts(tmp_path)
    other = _spec_prompts(tmp_path, **change)
    assert other.summary()["cache"] == "miss"
    assert len(list((tmp_path / "prompts").glob("*.json"))) == 2


def test_a_changed_tokenizer_misses(tmp_path: Path, tok: Any) -> None:
    spec = {"input_len": 32, "output_len": 4, "seed": 0}
    load_prompts(spec, 8, tokenizer=tok, cache_dir=tmp_path)
    changed = load_offline_tokenizer()
    changed.add_tokens(["zzzqqq"])
    assert tokenizer_fingerprint(changed) != tokenizer_fingerprint(tok)
    again = load_prompts(spec, 8, tokenizer=changed, cache_dir=tmp_path)
    assert again.summary()["cache"] == "miss"


def _entry(tmp_path: Path, tok: Any) -> Path:
    key = synthetic_key(SyntheticSpec(8, 32, 4, 0), 8, str(tokenizer_fingerprint(tok)))
    return cache_path(tmp_path, key)


def _tamper_text(data: dict[str, Any]) -> None:
    data["prompts"][0]["text"] = "edited"


def _tamper_key(data: dict[str, Any]) -> None:
    data["key"]["seed"] = 99


def _tamper_count(data: dict[str, Any]) -> None:
    data["prompts"].pop()


@pytest.mark.parametrize("how", ["truncated", "text", "key", "count"])
def test_a_bad_entry_is_ignored_and_rebuilt(tmp_path: Path, tok: Any, how: str) -> None:
    built = _spec_prompts(tmp_path)
    path = _entry(tmp_path, tok)
    if how == "truncated":
        path.write_text(path.read_text()[:100])
    else:
        data = json.loads(path.read_text())
        {"text": _tamper_text, "key": _tamper_key, "count": _tamper_count}[how](data)
        path.write_text(json.dumps(data))
    again = _spec_prompts(tmp_path)
    assert again.summary()["cache"] == "miss"  # never trusted
    assert list(again) == list(built)
    assert _spec_prompts(tmp_path).summary()["cache"] == "hit"  # the entry was rewritten whole


def test_no_cache_dir_means_no_cache(tmp_path: Path) -> None:
    prompts = load_prompts({"input_len": 16, "output_len": 2}, 4)
    assert "cache" not in prompts.summary()
    assert synthetic.GENERATOR_VERSION >= 1
