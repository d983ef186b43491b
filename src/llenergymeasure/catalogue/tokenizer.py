"""The offline tokenizer: a byte-level BPE shipped with the package (no network needed).

Random-weight models (``weights: random``) have no tokenizer of their own; they use this one.
It was trained by ``scripts/train_tokenizer.py`` (vocabulary
:data:`~llenergymeasure.catalogue.architectures.OFFLINE_TOKENIZER_VOCAB_SIZE`), prepends
``<|bos|>`` and pads on the left, as decoder-only batched generation needs.

transformers is imported inside :func:`load_offline_tokenizer` only, so importing this module
stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, cast

from llenergymeasure.exceptions import BackendNotInstalledError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TOKENIZER_FILE = "llem-bpe.json"
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
#: Longest input the tokenizer accepts without truncation warnings (the tiny-llama context).
MODEL_MAX_LENGTH = 2048


def offline_tokenizer_path() -> Path:
    """Path of the shipped tokenizer JSON (package data)."""
    ref = resources.files("llenergymeasure.catalogue") / TOKENIZER_FILE
    return Path(str(ref))


def load_offline_tokenizer(model_max_length: int = MODEL_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """A ``transformers.PreTrainedTokenizerFast`` over the shipped BPE.

    Pad token set, ``padding_side="left"``. Each call returns a fresh object (callers may
    change it); the parsed file is cached. Raises ``BackendNotInstalledError`` without
    transformers.
    """
    try:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast
    except ImportError as e:
        raise BackendNotInstalledError(
            'the offline tokenizer needs transformers: pip install "llenergymeasure[pytorch]"'
        ) from e
    # transformers leaves the constructor unannotated: say what it returns
    new_tokenizer = cast("Callable[..., PreTrainedTokenizerFast]", PreTrainedTokenizerFast)
    return new_tokenizer(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """The tokenizer file's text, read once."""
    return offline_tokenizer_path().read_text(encoding="utf-8")
