"""Synthetic prompts with an exact input length in tokens.

A synthetic dataset ``{n, input_len, output_len, seed}`` gives ``n`` prompts that each encode
to exactly ``input_len`` tokens under the tokenizer the model will use, counted the way the
backends count them: ``len(tokenizer(text)["input_ids"])``, special tokens the tokenizer adds
(e.g. ``<|bos|>``) included. Each prompt carries ``target_output_tokens = output_len`` for the
backend to enforce (``min_new_tokens``/``ignore_eos``).

Texts are built from whole-word vocabulary entries joined by spaces, then adjusted word by
word until the length is exact (a join can merge or split pieces, so the count is always
checked on the real encoding).

**Speed.** The word-by-word search needs a token count after every step. A tokenizer that
splits text before every space (byte-level BPE with its pre-tokenizer regex, as the offline
tokenizer does) encodes ``w0 w1 ... wk`` as its special tokens plus the pieces of ``w0``
and of each `` wi``: :class:`_PieceCounter` counts those once per pool word, so the search
encodes nothing, and each finished text is then checked on the real encoding (all texts in
one batch call). If a check fails (pieces that are not additive), every text is built again
with the real encoding at each step (:func:`text_with_exact_tokens`), the original method.
For the offline tokenizer both give the same texts (a test compares them); 1,024 prompts of
512 tokens take a fraction of a second instead of seconds.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llenergymeasure.datasets.types import Prompt
from llenergymeasure.exceptions import ConfigError, ExperimentError

_WORD = re.compile(r"^[A-Za-z]{2,}$")
_POOL_PROBE_IDS = 6000  # vocabulary ids probed for whole-word pieces
_MAX_ADJUST_STEPS = 400
#: Bump whenever the texts built for a spec change (the prompt cache keys on it).
GENERATOR_VERSION = 1
#: Token count of a word list joined by spaces.
Length = Callable[[list[str]], int]


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic dataset request (duck-type compatible with the config's SyntheticDatasetConfig)."""

    n: int
    input_len: int
    output_len: int
    seed: int = 0


def as_synthetic_spec(obj: Any, default_n: int | None = None) -> SyntheticSpec | None:
    """``obj`` as a spec if it is a mapping or object with input_len/output_len, else None.

    A spec without ``n`` (the config's ``dataset: {input_len, output_len}``) takes
    ``default_n``, the experiment's ``n``.
    """
    if isinstance(obj, SyntheticSpec):
        return obj
    if isinstance(obj, str):
        return None
    values: dict[str, Any] = {
        key: obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
        for key in ("n", "input_len", "output_len", "seed")
    }
    if values["n"] is None:
        values["n"] = default_n
    if any(values[k] is None for k in ("n", "input_len", "output_len")):
        return None
    try:
        return SyntheticSpec(
            n=int(values["n"]),
            input_len=int(values["input_len"]),
            output_len=int(values["output_len"]),
            seed=int(values["seed"] or 0),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"dataset: synthetic n/input_len/output_len/seed must be integers ({e}) -> fix them"
        ) from e


def synthetic_prompts(spec: SyntheticSpec, tokenizer: Any, n: int | None = None) -> list[Prompt]:
    """``n`` (default ``spec.n``) prompts of exactly ``spec.input_len`` tokens each."""
    count = spec.n if n is None else n
    _check_spec(spec, count, tokenizer)
    pool = word_pool(tokenizer)
    overhead = count_tokens(tokenizer, "")
    pieces = _PieceCounter(tokenizer, pool, overhead)
    texts = _texts(spec, count, pool, overhead, pieces.count)
    if texts is None or not _all_exact(tokenizer, texts, spec.input_len):
        texts = _texts(spec, count, pool, overhead, _encoded_length(tokenizer))
    if texts is None:
        raise _no_exact_text(spec.input_len)
    return [
        Prompt(
            id=f"synthetic-{spec.seed}-{i:05d}",
            text=text,
            task="synthetic",
            target_output_tokens=spec.output_len,
        )
        for i, text in enumerate(texts)
    ]


def _texts(
    spec: SyntheticSpec, count: int, pool: list[str], overhead: int, length: Length
) -> list[str] | None:
    """``count`` texts from one generator seeded with ``spec.seed`` (None if one of them
    does not converge)."""
    rng = random.Random(spec.seed)
    texts = []
    for _ in range(count):
        words = _search(spec.input_len, rng, pool, overhead, length)
        if words is None:
            return None
        texts.append(" ".join(words))
    return texts


class _PieceCounter:
    """Token counts of pool-word texts from the pieces of each word (see module docstring):
    exact for tokenizers that split before every space; checked afterwards anyway."""

    def __init__(self, tokenizer: Any, pool: list[str], overhead: int) -> None:
        words = list(dict.fromkeys(pool))
        bare = tokenizer(words, add_special_tokens=False)["input_ids"]
        spaced = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
        self._first = {w: len(t) for w, t in zip(words, bare, strict=True)}
        self._later = {w: len(t) for w, t in zip(words, spaced, strict=True)}
        self._overhead = overhead

    def count(self, words: list[str]) -> int:
        """Tokens of ``" ".join(words)`` if the pieces add up."""
        if not words:
            return self._overhead
        later = self._later
        return self._overhead + self._first[words[0]] + sum(later[w] for w in words[1:])


def _all_exact(tokenizer: Any, texts: list[str], n_tokens: int) -> bool:
    """Whether every text encodes to ``n_tokens`` tokens (one batch call)."""
    encoded: list[list[int]] = tokenizer(texts)["input_ids"]
    return all(len(ids) == n_tokens for ids in encoded)


def _encoded_length(tokenizer: Any) -> Length:
    """The real count: encode the joined text."""
    return lambda words: count_tokens(tokenizer, " ".join(words))


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens the model sees for ``text`` (special tokens the tokenizer adds included)."""
    return len(tokenizer(text)["input_ids"])


def _check_spec(spec: SyntheticSpec, count: int, tokenizer: Any) -> None:
    """Reject lengths the tokenizer cannot produce, with the fix."""
    overhead = count_tokens(tokenizer, "")
    if spec.input_len <= overhead:
        raise ConfigError(
            f"dataset.input_len: {spec.input_len} leaves no room for text (the tokenizer adds "
            f"{overhead} special token(s)) -> use input_len >= {overhead + 1}"
        )
    if spec.output_len < 1:
        raise ConfigError("dataset.output_len: must be >= 1 -> set output_len to a positive int")
    if count < 1:
        raise ConfigError("dataset.n: must be >= 1 -> ask for at least one prompt")


def word_pool(tokenizer: Any) -> list[str]:
    """Alphabetic vocabulary pieces, preferably those that encode after a space to one token."""
    vocab_size = len(tokenizer)
    probe = random.Random(0).sample(range(vocab_size), min(vocab_size, _POOL_PROBE_IDS))
    special = set(getattr(tokenizer, "all_special_ids", []))
    decoded = (tokenizer.decode([i]).strip() for i in sorted(probe) if i not in special)
    alphabetic = [w for w in decoded if _WORD.match(w)]
    spaced = tokenizer([" " + w for w in alphabetic], add_special_tokens=False)["input_ids"]
    words = [w for w, ids in zip(alphabetic, spaced, strict=True) if len(ids) == 1]
    if len(words) < 20:  # e.g. tokenizers that add a prefix space: the exactness loop copes
        words = alphabetic
    if len(words) < 20:
        raise ExperimentError(
            "the tokenizer has too few whole-word tokens for synthetic prompts -> use a "
            "different tokenizer or a file/builtin dataset"
        )
    return words


def text_with_exact_tokens(
    tokenizer: Any, n_tokens: int, rng: random.Random, pool: list[str]
) -> str:
    """A text of pool words that encodes to exactly ``n_tokens`` tokens.

    Starts from one word per missing token, then adds, drops or swaps words until the real
    encoding has the exact length. Raises ``ExperimentError`` if it cannot converge.
    """
    overhead = count_tokens(tokenizer, "")
    words = _search(n_tokens, rng, pool, overhead, _encoded_length(tokenizer))
    if words is None:
        raise _no_exact_text(n_tokens)
    return " ".join(words)


def _search(
    n_tokens: int, rng: random.Random, pool: list[str], overhead: int, length: Length
) -> list[str] | None:
    """Pool words whose join is ``n_tokens`` tokens long by ``length`` (None if the search
    does not converge): one word per missing token, then adjusted step by step."""
    words = rng.choices(pool, k=max(1, n_tokens - overhead))
    for _ in range(_MAX_ADJUST_STEPS):
        diff = length(words) - n_tokens
        if diff == 0:
            return words
        words = _adjust(words, diff, rng, pool)
    return None


def _no_exact_text(n_tokens: int) -> ExperimentError:
    return ExperimentError(
        f"could not build a prompt of exactly {n_tokens} tokens with this tokenizer "
        "-> try another input_len or a file dataset"
    )


def _adjust(words: list[str], diff: int, rng: random.Random, pool: list[str]) -> list[str]:
    """Move the word list toward the target: drop words if too long, add if too short, and
    swap the last word when one step overshoots (diff of +-1 that does not budge)."""
    if diff > 0 and len(words) > 1:
        keep = max(1, len(words) - diff)
        return words[:keep] if keep < len(words) else [*words[:-1], rng.choice(pool)]
    if diff < 0:
        return words + rng.choices(pool, k=-diff)
    return [rng.choice(pool)]
