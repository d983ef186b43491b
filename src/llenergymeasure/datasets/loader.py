"""Load prompts from any supported dataset source.

``load_prompts(dataset, n, seed, tokenizer)`` accepts

* ``"builtin"``: the 1000 prompts shipped with the package (docs/datasets.md);
* a path to a ``.jsonl`` / ``.json`` / ``.csv`` / ``.txt`` file (text: one prompt per line); the
  prompt field is auto-detected (``prompt``, ``text``, ``instruction``, ``question``, ``input``,
  ``content``; a ``messages`` list gives its last user message);
* a Hugging Face dataset ``"hf:<name>[:split][:column]"`` or a known name (``aienergyscore``),
  through the optional ``datasets`` package;
* a synthetic spec (mapping or object with ``n``, ``input_len``, ``output_len``, ``seed``).

Sampling is deterministic for a seed. Asking for more prompts than a source has cycles
through it again (reshuffled), logs a warning and records ``cycled=True`` on the result.

``cap_prompt_chars`` bounds the work on huge inputs: a prompt is cut to
``max_input_tokens x MAX_CHARS_PER_TOKEN`` characters before it is tokenised (a 50 MB
one-line prompt took 6 minutes and 7 GB to tokenise only to keep its first 512 tokens).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import random
import socket
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from llenergymeasure.datasets.synthetic import SyntheticSpec, as_synthetic_spec, synthetic_prompts
from llenergymeasure.datasets.types import Prompt, PromptList
from llenergymeasure.exceptions import ConfigError

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
PROMPT_KEYS = ("prompt", "text", "instruction", "question", "input", "content")
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt")
#: Short names for Hugging Face datasets: name -> (hub id, split, column or None = detect).
KNOWN_HF_DATASETS: dict[str, tuple[str, str, str | None]] = {
    "aienergyscore": ("AIEnergyScore/text_generation", "train", "text"),
}
HUB_HOST, HUB_PROBE_TIMEOUT_S = "huggingface.co", 3.0
#: Characters kept per allowed input token before tokenising. Tokens of the usual BPE
#: vocabularies span a few characters (long ones: runs of spaces or symbols, rarely 20+),
#: so the first max_input_tokens tokens of a cut prompt are those of the whole prompt;
#: a text whose tokens are longer still keeps every character up to the cut.
MAX_CHARS_PER_TOKEN = 32

Row = Mapping[str, Any]


def load_prompts(
    dataset: Any,
    n: int | None = None,
    seed: int = 0,
    tokenizer: Any = None,
    cache_dir: Path | None = None,
) -> PromptList:
    """Prompts from ``dataset`` (see module docstring), ``n`` of them (``None``: all rows,
    or the synthetic spec's ``n``), sampled with ``seed``.

    ``tokenizer`` is needed for synthetic specs only (default: the offline tokenizer).
    ``cache_dir``: where synthetic prompts are cached (a study's ``<study dir>/cache``;
    `datasets.cache`); None builds them afresh. Raises ``ConfigError`` with a fix for
    every bad source.
    """
    if n is not None and n < 1:
        raise ConfigError(f"n: must be >= 1, got {n} -> ask for at least one prompt")
    spec = as_synthetic_spec(dataset, default_n=n)
    if spec is not None:
        return _load_synthetic(spec, n, tokenizer, cache_dir)
    if not isinstance(dataset, str | os.PathLike):
        raise ConfigError(
            f"dataset: unsupported value {dataset!r} -> use 'builtin', a file path, "
            "'hf:<name>' or {n, input_len, output_len, seed}"
        )
    source, rows = _rows_for(os.fspath(dataset))
    return sample_prompts(rows, n, seed, source)


def _load_synthetic(
    spec: SyntheticSpec, n: int | None, tokenizer: Any, cache_dir: Path | None
) -> PromptList:
    """Synthetic prompts, with the offline tokenizer by default; through the prompt cache
    when ``cache_dir`` is given (``cache`` in the summary: hit, miss or off)."""
    if tokenizer is None:
        from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer

        tokenizer = load_offline_tokenizer()
    count = spec.n if n is None else n
    cache = None
    if cache_dir is not None:
        from llenergymeasure.datasets.cache import cached_synthetic

        prompts, cache = cached_synthetic(
            cache_dir, spec, count, tokenizer, lambda: synthetic_prompts(spec, tokenizer, n)
        )
    else:
        prompts = synthetic_prompts(spec, tokenizer, n)
    source = (
        f"synthetic(input_len={spec.input_len}, output_len={spec.output_len}, seed={spec.seed})"
    )
    return PromptList(prompts, source=source, n_available=len(prompts), cache=cache)


def _rows_for(dataset: str) -> tuple[str, list[Prompt]]:
    """(source label, all prompts) for a named or file dataset."""
    name = dataset.strip()
    if name.lower() == BUILTIN:
        return "builtin", load_builtin()
    if name.lower().startswith("hf:") or name.lower() in KNOWN_HF_DATASETS:
        return name, load_hf_dataset(name)
    path = Path(name).expanduser()
    if path.exists() or path.suffix.lower() in FILE_SUFFIXES or os.sep in name:
        return str(path), load_file(path)
    raise ConfigError(
        f"dataset: unknown dataset {name!r} -> use 'builtin', a path to a "
        f"{'/'.join(FILE_SUFFIXES)} file, 'hf:<name>[:split][:column]' or one of: "
        f"{', '.join(KNOWN_HF_DATASETS)}"
    )


def cap_prompt_chars(prompts: PromptList, max_input_tokens: int) -> PromptList:
    """``prompts`` with every text longer than ``max_input_tokens x MAX_CHARS_PER_TOKEN``
    characters cut to that length and marked ``cut`` (the backends count it truncated);
    the same list when none is that long."""
    limit = max_input_tokens * MAX_CHARS_PER_TOKEN
    n_cut = sum(len(p.text) > limit for p in prompts)
    if not n_cut:
        return prompts
    capped = [
        dataclasses.replace(p, text=p.text[:limit], cut=True) if len(p.text) > limit else p
        for p in prompts
    ]
    note = (
        f"{n_cut} prompt(s) longer than {limit:,} characters (max_input_tokens x "
        f"{MAX_CHARS_PER_TOKEN}) were cut to that before tokenising"
    )
    return PromptList(
        capped,
        source=prompts.source,
        n_available=prompts.n_available,
        cycled=prompts.cycled,
        notes=[*prompts.notes, note],
        cache=prompts.cache,
    )


# ---- sampling -----------------------------------------------------------------------------
def sample_prompts(rows: list[Prompt], n: int | None, seed: int, source: str) -> PromptList:
    """``n`` prompts drawn without replacement (seeded); more than exist cycles with a warning.

    ``n=None`` returns every row in file order.
    """
    if not rows:
        raise ConfigError(f"dataset: {source} holds no prompts -> give a file with prompts")
    if n is None:
        return PromptList(list(rows), source=source, n_available=len(rows))
    rng = random.Random(seed)
    picked: list[Prompt] = []
    cycle = 0
    while len(picked) < n:
        order = rng.sample(range(len(rows)), min(len(rows), n - len(picked)))
        picked.extend(_repeat(rows[i], cycle) for i in order)
        cycle += 1
    cycled = cycle > 1
    notes = []
    if cycled:
        notes.append(f"asked for {n} prompts but {source} has {len(rows)}: prompts repeat")
        logger.warning("%s; cycling through the dataset %d times", notes[-1], cycle)
    return PromptList(picked, source=source, n_available=len(rows), cycled=cycled, notes=notes)


def _repeat(prompt: Prompt, cycle: int) -> Prompt:
    """The prompt itself on the first pass; a copy with a distinct id on later passes."""
    if cycle == 0:
        return prompt
    return Prompt(f"{prompt.id}#{cycle}", prompt.text, prompt.task, prompt.target_output_tokens)


# ---- built-in and files -------------------------------------------------------------------
def builtin_prompts_path() -> Path:
    """Path of the shipped prompt set."""
    return Path(str(resources.files("llenergymeasure.datasets") / "builtin" / "prompts.jsonl"))


def load_builtin() -> list[Prompt]:
    """All 1000 built-in prompts, in file order."""
    return load_file(builtin_prompts_path())


def load_file(path: Path) -> list[Prompt]:
    """All prompts of a local file (format chosen by suffix). A file that is not UTF-8
    text, or a CSV the csv module refuses, is a ConfigError naming the file and the fix."""
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return _from_text(path)
        rows = _read_jsonl(path) if suffix == ".jsonl" else _read_json_or_csv(path, suffix)
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"dataset: {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start:,} of a read block; a binary file?) -> save it as UTF-8 text "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from e
    if not rows:
        raise ConfigError(f"dataset: {path} has no rows -> add prompts to the file")
    return rows_to_prompts(rows, source=str(path), id_prefix=path.stem)


def _check_file(path: Path) -> None:
    """Missing file, directory, unsupported suffix or empty file -> ConfigError with a fix."""
    if not path.exists():
        raise ConfigError(f"dataset: file not found: {path} -> check the path (or use 'builtin')")
    if path.is_dir():
        raise ConfigError(f"dataset: {path} is a directory -> point to a file inside it")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise ConfigError(
            f"dataset: unsupported file type {path.suffix or '(none)'!r} -> use one of "
            f"{', '.join(FILE_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise ConfigError(f"dataset: {path} is empty -> add prompts to the file")


def _from_text(path: Path) -> list[Prompt]:
    """One prompt per non-blank line."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [Prompt(f"{path.stem}-{i}", ln) for i, ln in enumerate(lines) if ln]
    if not prompts:
        raise ConfigError(f"dataset: {path} has only blank lines -> add prompts, one per line")
    return prompts


def _read_jsonl(path: Path) -> list[Row]:
    """JSON objects (or bare strings) one per line; errors name the line."""
    rows: list[Row] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"dataset: {path}:{lineno}: invalid JSON ({e.msg}) -> one JSON object per line"
                ) from e
            rows.append({"prompt": value} if isinstance(value, str) else value)
    return rows


def _read_json_or_csv(path: Path, suffix: str) -> list[Row]:
    """Rows of a CSV (header required) or a JSON array / ``{"data": [...]}`` file."""
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            return _read_csv(f, path)
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"dataset: {path}: invalid JSON ({e.msg}) -> fix the file") from e
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ConfigError(f"dataset: {path} must hold a JSON array of rows -> or use JSONL")
    return [{"prompt": v} if isinstance(v, str) else v for v in data]


def _read_csv(f: Any, path: Path) -> list[Row]:
    """Rows of a CSV with a header; csv module errors name the file and line."""
    reader = csv.DictReader(f)
    try:
        return list(reader)
    except csv.Error as e:
        line = reader.line_num
        if "field larger than field limit" in str(e):
            raise ConfigError(
                f"dataset: {path}:{line}: a field is longer than the csv module's limit of "
                f"{csv.field_size_limit():,} characters -> give prompts this long as JSONL "
                "(one JSON object per line) or a .txt file (one prompt per line)"
            ) from e
        raise ConfigError(f"dataset: {path}:{line}: not valid CSV ({e}) -> fix the file") from e


# ---- field detection ----------------------------------------------------------------------
def detect_prompt_field(columns: list[str]) -> str | None:
    """The column holding prompts: first of PROMPT_KEYS present (case-insensitive), else
    ``messages``, else None."""
    lower = {c.lower(): c for c in columns}
    for key in (*PROMPT_KEYS, "messages"):
        if key in lower:
            return lower[key]
    return None


def rows_to_prompts(
    rows: list[Row], source: str, id_prefix: str, column: str | None = None
) -> list[Prompt]:
    """Prompts from dict rows; ``column`` (or the detected field) holds the text.

    Rows whose text is empty are skipped (logged); a row without the field is an error.
    """
    if not isinstance(rows[0], Mapping):
        raise ConfigError(
            f"dataset: {source}: rows must be JSON objects or strings -> fix the rows"
        )
    field = column or detect_prompt_field(list(rows[0]))
    if field is None:
        raise ConfigError(
            f"dataset: {source}: no prompt field among columns {sorted(rows[0])} -> rename one "
            f"to 'prompt' (accepted: {', '.join(PROMPT_KEYS)}, messages)"
        )
    prompts = [_row_prompt(row, field, i, source, id_prefix) for i, row in enumerate(rows)]
    kept = [p for p in prompts if p is not None and p.text.strip()]
    if len(kept) < len(prompts):
        logger.warning("%s: skipped %d empty prompt(s)", source, len(prompts) - len(kept))
    if not kept:
        raise ConfigError(f"dataset: {source}: every {field!r} value is empty -> fill in prompts")
    return kept


def _row_prompt(row: Row, field: str, index: int, source: str, id_prefix: str) -> Prompt | None:
    """One row as a Prompt (None for an empty value)."""
    if not isinstance(row, Mapping) or field not in row:
        raise ConfigError(
            f"dataset: {source}: row {index + 1} has no {field!r} field -> give every row one"
        )
    value = row[field]
    text = _last_user_message(value) if isinstance(value, list) else value
    if text is None or text == "":
        return None
    row_id = row.get("id")
    task = row.get("task") or row.get("category")
    return Prompt(
        id=str(row_id) if row_id not in (None, "") else f"{id_prefix}-{index}",
        text=str(text),
        task=str(task) if task else None,
    )


def _last_user_message(messages: list[Any]) -> str | None:
    """Content of the last ``role == "user"`` message of a chat transcript."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else None
    return None


# ---- Hugging Face datasets ----------------------------------------------------------------
def parse_hf_name(name: str) -> tuple[str, str, str | None]:
    """``hf:<name>[:split][:column]`` or a known short name -> (hub id, split, column)."""
    if name.lower() in KNOWN_HF_DATASETS:
        return KNOWN_HF_DATASETS[name.lower()]
    parts = name[3:].split(":")
    if not parts[0]:
        raise ConfigError("dataset: 'hf:' needs a dataset name -> e.g. 'hf:org/name:train:text'")
    split = parts[1] if len(parts) > 1 and parts[1] else "train"
    column = parts[2] if len(parts) > 2 and parts[2] else None
    return parts[0], split, column


def load_hf_dataset(name: str) -> list[Prompt]:
    """All prompts of a Hugging Face dataset split (hub or local cache)."""
    hub_id, split, column = parse_hf_name(name)
    _go_offline_if_hub_unreachable()  # before the import: the hub client reads it at import
    datasets = _import_datasets(name)
    try:
        ds = datasets.load_dataset(hub_id, split=split)
    except Exception as e:  # the hub client raises many types; translate them all once
        raise ConfigError(
            f"dataset: could not load {hub_id!r} split {split!r} ({type(e).__name__}: {e}). "
            "The hub may be unreachable and the dataset not cached -> use 'builtin' or a "
            "local JSONL/CSV file"
        ) from e
    rows: list[Row] = [dict(r) for r in ds]
    if not rows:
        raise ConfigError(f"dataset: {hub_id!r} split {split!r} is empty -> pick another split")
    return rows_to_prompts(rows, source=name, id_prefix=hub_id.split("/")[-1], column=column)


def _import_datasets(name: str) -> Any:
    """The ``datasets`` module, or a ConfigError that says how to do without it."""
    try:
        import datasets
    except ImportError as e:
        raise ConfigError(
            f"dataset: {name!r} needs the 'datasets' package (pip install datasets), which is "
            "not installed -> install it, or use 'builtin' or a local JSONL/CSV file"
        ) from e
    return datasets


def _go_offline_if_hub_unreachable() -> None:
    """Set HF_HUB_OFFLINE=1 when the hub does not answer quickly, so loading uses the cache
    instead of hanging on retries."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return
    try:
        socket.create_connection((HUB_HOST, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        logger.warning("%s unreachable: using the local datasets cache only", HUB_HOST)
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
