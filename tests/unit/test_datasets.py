"""Dataset loading: builtin set, local files, HF names, synthetic exact-length prompts."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.datasets.loader import (
    builtin_prompts_path,
    detect_prompt_field,
    load_prompts,
    parse_hf_name,
)
from llenergymeasure.datasets.synthetic import SyntheticSpec, count_tokens
from llenergymeasure.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok() -> Any:
    pytest.importorskip("transformers")
    from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer

    return load_offline_tokenizer()


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- builtin ------------------------------------------------------------------------------
def test_builtin_has_1000_distinct_prompts_with_ids_and_tasks() -> None:
    prompts = load_prompts("builtin")
    assert len(prompts) == 1000 == prompts.n_available
    assert len({p.id for p in prompts}) == 1000
    assert len({p.text for p in prompts}) == 1000
    assert len({p.task for p in prompts}) >= 10
    assert builtin_prompts_path().stat().st_size < 1_500_000


def test_builtin_is_reproduced_by_the_generator(tmp_path: Path) -> None:
    out = tmp_path / "prompts.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/generate_prompts.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == builtin_prompts_path().read_bytes()


def test_sampling_is_deterministic_and_seed_dependent() -> None:
    a = load_prompts("builtin", n=20, seed=1)
    b = load_prompts("builtin", n=20, seed=1)
    c = load_prompts("builtin", n=20, seed=2)
    assert [p.id for p in a] == [p.id for p in b] != [p.id for p in c]
    assert len({p.id for p in a}) == 20 and not a.cycled


def test_more_than_available_cycles_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}"} for i in range(3)])
    with caplog.at_level(logging.WARNING):
        prompts = load_prompts(str(path), n=7, seed=0)
    assert len(prompts) == 7 and prompts.cycled and prompts.n_available == 3
    assert len({p.id for p in prompts}) == 7  # repeats get distinct ids
    assert sorted({p.text for p in prompts}) == ["p0", "p1", "p2"]
    assert "prompts repeat" in caplog.text and prompts.summary()["cycled"] is True


# ---- files --------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["prompt", "text", "Instruction", "question", "input", "content"])
def test_jsonl_prompt_field_is_detected(tmp_path: Path, key: str) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "x1", key: "hello", "other": 1}])
    (p,) = load_prompts(path)
    assert (p.id, p.text) == ("x1", "hello")


def test_prompt_is_preferred_over_text() -> None:
    assert detect_prompt_field(["text", "prompt"]) == "prompt"


def test_messages_give_last_user_turn(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    path = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat}])
    assert load_prompts(path)[0].text == "second"


def test_no_prompt_field_lists_columns(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"foo": "a", "bar": "b"}])
    with pytest.raises(ConfigError, match=r"\['bar', 'foo'\]"):
        load_prompts(path)


def test_csv_and_txt_and_json(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerows([["q1, with comma", "a1"], ["q2", "a2"]])
    assert [p.text for p in load_prompts(csv_path)] == ["q1, with comma", "q2"]
    txt = tmp_path / "d.txt"
    txt.write_text("one\n\n two \n", encoding="utf-8")
    assert [p.text for p in load_prompts(txt)] == ["one", "two"]
    js = tmp_path / "d.json"
    js.write_text(json.dumps(["a", "b"]), encoding="utf-8")
    assert [p.text for p in load_prompts(js)] == ["a", "b"]
    js.write_text(json.dumps({"data": [{"id": 7, "text": "c"}]}), encoding="utf-8")
    assert [(p.id, p.text) for p in load_prompts(js)] == [("7", "c")]


def test_empty_values_are_skipped(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": ""}, {"prompt": "ok"}])
    assert [p.text for p in load_prompts(path)] == ["ok"]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.jsonl", None, "file not found"),
        ("", None, "is a directory"),
        ("e.jsonl", "", "is empty"),
        ("b.jsonl", "{oops\n", r"b\.jsonl:1: invalid JSON"),
        ("b.json", "[1,", "invalid JSON"),
        ("o.json", '{"a": 1}', "JSON array"),
        ("x.parquet", "x", "unsupported file type"),
        ("blank.txt", "\n\n", "blank lines"),
        ("allempty.jsonl", '{"prompt": ""}\n', "every 'prompt' value is empty"),
    ],
)
def test_bad_files_raise_config_error_with_fix(
    tmp_path: Path, name: str, content: str | None, match: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as err:
        load_prompts(path)
    assert "->" in str(err.value)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError, match="builtin"):
        load_prompts("no-such-dataset")


def test_n_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="n: must be >= 1"):
        load_prompts("builtin", n=0)


# ---- Hugging Face -------------------------------------------------------------------------
def test_parse_hf_names() -> None:
    assert parse_hf_name("hf:org/set") == ("org/set", "train", None)
    assert parse_hf_name("hf:org/set:test:question") == ("org/set", "test", "question")
    assert parse_hf_name("aienergyscore")[0] == "AIEnergyScore/text_generation"


def test_hf_dataset_unavailable_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `datasets`, or offline with nothing cached: a ConfigError naming alternatives."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ConfigError, match="use 'builtin' or a local") as err:
        load_prompts("hf:llem-test/definitely-not-cached", n=1)
    if importlib.util.find_spec("datasets") is None:
        assert "pip install datasets" in str(err.value)


# ---- synthetic ----------------------------------------------------------------------------
@dataclass
class _ConfigLike:
    """Stands in for config.models.SyntheticDatasetConfig (duck-typed)."""

    n: int
    input_len: int
    output_len: int
    seed: int = 0


@pytest.mark.parametrize("input_len", [2, 3, 7, 32, 128, 513, 1024])
def test_synthetic_prompts_have_exact_token_count(tok: Any, input_len: int) -> None:
    prompts = load_prompts(
        {"n": 5, "input_len": input_len, "output_len": 9, "seed": 3}, tokenizer=tok
    )
    assert len(prompts) == 5
    assert [count_tokens(tok, p.text) for p in prompts] == [input_len] * 5
    assert {p.target_output_tokens for p in prompts} == {9}


def test_synthetic_accepts_config_objects_and_is_seeded(tok: Any) -> None:
    a = load_prompts(_ConfigLike(n=3, input_len=50, output_len=4, seed=1), tokenizer=tok)
    b = load_prompts(SyntheticSpec(n=3, input_len=50, output_len=4, seed=1), tokenizer=tok)
    c = load_prompts(_ConfigLike(n=3, input_len=50, output_len=4, seed=2), tokenizer=tok)
    assert [p.text for p in a] == [p.text for p in b] != [p.text for p in c]
    assert len({p.text for p in a}) == 3


def test_synthetic_n_argument_overrides_spec(tok: Any) -> None:
    prompts = load_prompts(_ConfigLike(n=3, input_len=10, output_len=4), n=6, tokenizer=tok)
    assert len(prompts) == 6


def test_synthetic_default_tokenizer_is_offline_one(tok: Any) -> None:
    (p,) = load_prompts({"n": 1, "input_len": 20, "output_len": 1})
    assert count_tokens(tok, p.text) == 20


def test_synthetic_input_len_below_special_tokens_is_rejected(tok: Any) -> None:
    with pytest.raises(ConfigError, match="input_len"):
        load_prompts({"n": 1, "input_len": 1, "output_len": 1}, tokenizer=tok)


def test_loader_import_does_not_load_torch_or_transformers() -> None:
    code = (
        "import sys, llenergymeasure.datasets.loader, llenergymeasure.catalogue.tokenizer;"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    assert out.stdout.strip() == "[]"


def test_config_synthetic_dataset_without_n_takes_experiment_n() -> None:
    """A YAML `dataset: {input_len, output_len}` reaches the loader as the pydantic model."""
    from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer
    from llenergymeasure.config.models import ExperimentConfig

    cfg = ExperimentConfig(model="tiny-llama", n=3, dataset={"input_len": 8, "output_len": 4})
    tok = load_offline_tokenizer()
    prompts = load_prompts(cfg.dataset, cfg.n, cfg.random_seed, tokenizer=tok)
    assert len(prompts) == 3
    assert all(len(tok(p.text)["input_ids"]) == 8 for p in prompts)
    assert all(p.target_output_tokens == 4 for p in prompts)


def test_prompts_longer_than_the_token_budget_allows_are_cut_before_tokenising() -> None:
    from llenergymeasure.datasets.loader import MAX_CHARS_PER_TOKEN, cap_prompt_chars
    from llenergymeasure.datasets.types import Prompt, PromptList

    prompts = PromptList([Prompt("a", "x" * 10_000), Prompt("b", "short")], "test", 2)
    assert cap_prompt_chars(prompts, 1_000) is prompts  # nothing that long: untouched

    capped = cap_prompt_chars(prompts, 16)

    assert len(capped[0].text) == 16 * MAX_CHARS_PER_TOKEN and capped[0].cut
    assert capped[1] == prompts[1] and not capped[1].cut
    assert "1 prompt(s) longer than 512 characters" in capped.notes[-1]
    assert (capped.source, capped.n_available) == ("test", 2)


def test_non_utf8_and_oversized_csv_fields_are_config_errors_naming_the_file(
    tmp_path: Path,
) -> None:
    from llenergymeasure.datasets.loader import load_file

    latin = tmp_path / "p.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"p\.txt is not UTF-8 text"):
        load_file(latin)
    wide = tmp_path / "p.csv"
    wide.write_text("prompt\n" + "y" * 200_000 + "\n")
    with pytest.raises(ConfigError, match=r"p\.csv:\d+: a field is longer"):
        load_file(wide)
