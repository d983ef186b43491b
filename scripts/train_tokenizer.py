#!/usr/bin/env python3
"""Train the offline byte-level BPE tokenizer shipped with llenergymeasure.

Random-weight models (``weights: random``) need a tokenizer that works without the network.
This script trains one with the Hugging Face ``tokenizers`` library on the built-in prompt
set and writes ``src/llenergymeasure/catalogue/llem-bpe.json``.

The prompt set alone (about 350 kB of templated text) supports only ~3300 BPE entries, and a
tokenizer that knows only its words would shred any other text into bytes. So the corpus is
the prompts (weighted x3) plus the source of the Python standard library's top-level modules
(English docstrings and comments, and code): general-purpose English and code pieces, from a
source every Python install carries. The shipped file was trained with CPython 3.11.7; another
Python version gives slightly different merges (the tests check properties, not bytes).

* byte-level: every string is encodable (no unknown characters), decoding is lossless;
* special tokens ``<|pad|>`` (0), ``<|bos|>`` (1), ``<|eos|>`` (2), ``<|unk|>`` (3);
* a post-processor prepends ``<|bos|>`` like Llama tokenizers do;
* vocabulary size ``OFFLINE_TOKENIZER_VOCAB_SIZE`` (8000), which ``tiny-llama`` matches.

Training is deterministic for a given corpus, so re-running reproduces the shipped file.

    python scripts/train_tokenizer.py [--prompts PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llenergymeasure.catalogue.architectures import (  # noqa: E402
    OFFLINE_BOS_ID,
    OFFLINE_TOKENIZER_VOCAB_SIZE,
)

PROMPT_WEIGHT = 3  # the prompts count three times against the stdlib text
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]
DEFAULT_PROMPTS = ROOT / "src/llenergymeasure/datasets/builtin/prompts.jsonl"
DEFAULT_OUT = ROOT / "src/llenergymeasure/catalogue/llem-bpe.json"


def read_corpus(path: Path) -> list[str]:
    """The prompt texts of a JSON-lines prompt file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def stdlib_corpus() -> list[str]:
    """Source text of the standard library's top-level ``*.py`` modules, in sorted order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [f.read_text(encoding="utf-8", errors="replace") for f in sorted(stdlib.glob("*.py"))]


def build_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE tokenizer with GPT-2-style pre-tokenisation."""
    tok = Tokenizer(models.BPE(unk_token="<|unk|>", fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train(corpus: list[str], vocab_size: int) -> Tokenizer:
    """Train BPE merges on ``corpus`` up to ``vocab_size`` entries (special tokens included)."""
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    bos = SPECIAL_TOKENS[OFFLINE_BOS_ID]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, OFFLINE_BOS_ID)]
    )
    return tok


def main() -> None:
    """Train on the prompt set and write the tokenizer JSON (compact, no indentation)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--vocab-size", type=int, default=OFFLINE_TOKENIZER_VOCAB_SIZE)
    args = parser.parse_args()
    corpus = PROMPT_WEIGHT * read_corpus(args.prompts) + stdlib_corpus()
    tok = train(corpus, args.vocab_size)
    for i, special in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(special) == i, f"{special} must have id {i}"
    got = tok.get_vocab_size()
    if got != args.vocab_size:
        sys.exit(f"trained vocab has {got} entries, expected {args.vocab_size}: corpus too small?")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(tok.to_str(pretty=False), encoding="utf-8")
    print(f"wrote {args.out} (vocab {got}, {args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
