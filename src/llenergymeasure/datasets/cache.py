"""A study's prompt cache: synthetic prompts built once, read back by later experiments.

Building a synthetic dataset costs seconds (every text is searched word by word and checked
on the real encoding); a study's experiments ask for the same one again and again. The
first experiment writes what it built to ``<cache dir>/prompts/synthetic-<key hash>.json``
(the study passes its ``<study dir>/cache``), the others read it.

A cache entry never changes what is measured:

* **keyed by everything that determines its content**: the generator version, the
  tokenizer's fingerprint (:func:`tokenizer_fingerprint`: a hash of its full serialised
  definition, vocabulary, merges, special tokens and post-processor included), ``n``,
  ``input_len``, ``output_len`` and ``seed``; the key is stored in the file and compared
  field by field on read (a hash collision in the file name cannot mix two entries up);
* **validated on read**: the stored key, a SHA-256 of the prompts, their number, ids and
  target lengths; anything off (a truncated file, an edited text, another key, unreadable
  JSON) and the entry is ignored and built again, never trusted;
* **written atomically** (temporary file, fsync, rename), so a reader sees a whole entry
  or none.

Prompts whose tokenizer has no serialisable definition (no fast tokenizer) are not cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llenergymeasure.datasets.synthetic import GENERATOR_VERSION, SyntheticSpec
from llenergymeasure.datasets.types import Prompt

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
PROMPTS_DIR = "prompts"


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """SHA-256 of the tokenizer's full definition (the fast tokenizer's JSON) and of what
    the wrapper adds (class, length, special tokens); None when it has no such definition."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    to_str = getattr(backend, "to_str", None)
    if to_str is None:
        return None
    try:
        definition = str(to_str())
    except Exception:  # a tokenizer that cannot serialise itself is simply not cached
        return None
    extra = {
        "class": type(tokenizer).__name__,
        "len": len(tokenizer),
        "special": {k: str(v) for k, v in (getattr(tokenizer, "special_tokens_map", {})).items()},
    }
    digest = hashlib.sha256(definition.encode("utf-8"))
    digest.update(json.dumps(extra, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


def synthetic_key(spec: SyntheticSpec, count: int, fingerprint: str) -> dict[str, Any]:
    """Everything that determines a synthetic dataset's prompts."""
    return {
        "kind": "synthetic",
        "format": CACHE_FORMAT,
        "generator": GENERATOR_VERSION,
        "tokenizer": fingerprint,
        "n": count,
        "input_len": spec.input_len,
        "output_len": spec.output_len,
        "seed": spec.seed,
    }


def cache_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    """Where the entry for ``key`` lives."""
    name = hashlib.sha256(_canonical(key).encode("ascii")).hexdigest()[:24]
    return Path(cache_dir) / PROMPTS_DIR / f"{key['kind']}-{name}.json"


def cached_synthetic(
    cache_dir: Path,
    spec: SyntheticSpec,
    count: int,
    tokenizer: Any,
    build: Callable[[], list[Prompt]],
) -> tuple[list[Prompt], str]:
    """The prompts for ``spec`` from the cache when a valid entry exists, else ``build()``
    (then written for the next experiment); with ``"hit"``, ``"miss"`` or ``"off"`` (the
    tokenizer cannot be fingerprinted)."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return build(), "off"
    key = synthetic_key(spec, count, fingerprint)
    path = cache_path(cache_dir, key)
    found = read_entry(path, key, spec)
    if found is not None:
        return found, "hit"
    prompts = build()
    try:
        write_entry(path, key, prompts)
    except OSError as e:  # a cache that cannot be written costs time, never the run
        logger.warning("prompt cache not written (%s): %s", path, e)
    return prompts, "miss"


def read_entry(path: Path, key: dict[str, Any], spec: SyntheticSpec) -> list[Prompt] | None:
    """The entry's prompts if the file is whole and belongs to ``key``; None otherwise
    (missing, unreadable, another key, a digest or a prompt that does not match)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        logger.warning("prompt cache entry %s ignored (unreadable: %s): rebuilding it", path, e)
        return None
    problem = _problem(data, key, spec)
    if problem is not None:
        logger.warning("prompt cache entry %s ignored (%s): rebuilding it", path, problem)
        return None
    return [
        Prompt(
            id=p["id"],
            text=p["text"],
            task=p["task"],
            target_output_tokens=p["target_output_tokens"],
        )
        for p in data["prompts"]
    ]


def _problem(data: Any, key: dict[str, Any], spec: SyntheticSpec) -> str | None:
    """Why ``data`` is not a valid entry for ``key`` (None: it is)."""
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list):
        return "not a prompt cache entry"
    if data.get("key") != key:
        return "written for another key"
    prompts = data["prompts"]
    if data.get("sha256") != _digest(prompts):
        return "contents do not match their digest"
    if len(prompts) != key["n"]:
        return f"{len(prompts)} prompts, {key['n']} expected"
    for i, p in enumerate(prompts):
        ok = (
            isinstance(p, dict)
            and p.get("id") == f"synthetic-{spec.seed}-{i:05d}"
            and isinstance(p.get("text"), str)
            and p["text"]
            and p.get("target_output_tokens") == spec.output_len
            and (p.get("task") is None or isinstance(p.get("task"), str))
        )
        if not ok:
            return f"prompt {i} is not what the spec makes"
    return None


def write_entry(path: Path, key: dict[str, Any], prompts: list[Prompt]) -> None:
    """Write the entry atomically (temporary file in the same directory, fsync, rename)."""
    rows = [
        {
            "id": p.id,
            "text": p.text,
            "task": p.task,
            "target_output_tokens": p.target_output_tokens,
        }
        for p in prompts
    ]
    text = json.dumps({"key": key, "sha256": _digest(rows), "prompts": rows})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _digest(rows: Any) -> str:
    return hashlib.sha256(_canonical(rows).encode("ascii")).hexdigest()


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
