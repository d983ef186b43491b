"""Shared helpers of the engine backends (vLLM, TensorRT-LLM), testable without the engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llenergymeasure.catalogue.architectures import get_architecture
from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.backends._engine_common import (
    engine_timing,
    output_length,
    prepare_token_ids,
    random_model_dir,
)
from llenergymeasure.datasets.types import Prompt
from llenergymeasure.exceptions import ConfigError


def _config(**kw: object) -> ExperimentConfig:
    return ExperimentConfig(**{"model": "tiny-llama", **kw})  # type: ignore[arg-type]


def test_random_model_dir_holds_the_catalogue_config() -> None:
    path = random_model_dir(_config())
    data = json.loads((path / "config.json").read_text())
    assert data["hidden_size"] == get_architecture("tiny-llama").hidden
    assert data["architectures"] == ["LlamaForCausalLM"]


def test_random_model_dir_is_the_same_path_for_the_same_architecture(tmp_path: Path) -> None:
    # vLLM keys its compile cache on the model path: a new directory per experiment missed it
    first = random_model_dir(_config(), tmp_path)
    assert random_model_dir(_config(), tmp_path) == first
    assert first.parent == tmp_path and first.name.startswith("llem-arch-")
    assert random_model_dir(_config(model="tiny-llama-hd64"), tmp_path) != first
    assert random_model_dir(_config()) == random_model_dir(_config())  # temp dir: stable too
    (first / "config.json").write_text("{}")  # damaged: written again
    assert json.loads((random_model_dir(_config(), tmp_path) / "config.json").read_text())


def test_random_model_dir_needs_a_known_architecture() -> None:
    with pytest.raises(ConfigError, match="weights: random"):
        random_model_dir(_config(model="some-org/some-model"))


def test_prepare_token_ids_truncates_and_counts() -> None:
    tokenizer = load_offline_tokenizer()
    prompts = [Prompt(id="a", text="one two three four five six"), Prompt(id="b", text="hi")]
    prepared = prepare_token_ids(tokenizer, prompts, _config(max_input_tokens=3))
    batch = prepared.batches[0]
    full = [len(tokenizer(p.text)["input_ids"]) for p in prompts]
    assert batch.input_tokens == [min(n, 3) for n in full]
    assert [len(ids) for ids in batch.payload] == batch.input_tokens
    assert prepared.truncated_requests == sum(n > 3 for n in full)


def test_output_length_prefers_a_common_dataset_target() -> None:
    same = [Prompt(id=str(i), text="x", target_output_tokens=7) for i in range(3)]
    mixed = [*same, Prompt(id="z", text="x", target_output_tokens=9)]
    assert output_length(_config(max_output_tokens=50), same)[0] == 7
    length, notes = output_length(_config(max_output_tokens=50), mixed)
    assert length == 50 and "different target output lengths" in notes[0]


def test_engine_timing_uses_first_and_last_token_times() -> None:
    timing = engine_timing(10.0, 5, 4, first_token_s=10.2, last_token_s=10.8)
    assert timing.token_times_s == [10.2, 10.8] and timing.output_tokens == 4
    assert engine_timing(10.0, 5, 4, None, None).token_times_s == []
    assert engine_timing(10.0, 5, 1, 10.2, 10.2).token_times_s == [10.2]
