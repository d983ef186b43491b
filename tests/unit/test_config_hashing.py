"""Config and study-design hashes: stable, sensitive to what is measured, blind to names."""

from __future__ import annotations

import json

from llenergymeasure.config.hashing import canonical_json, config_hash, study_design_hash
from llenergymeasure.config.introspection import config_json_schema, field_paths
from llenergymeasure.config.models import ExperimentConfig, StudyConfig


def test_config_hash_is_stable_across_key_order() -> None:
    a = ExperimentConfig.model_validate(
        {"model": "tiny-llama", "n": 5, "pytorch": {"batch_size": 2}}
    )
    b = ExperimentConfig.model_validate(
        {"pytorch": {"batch_size": 2}, "n": 5, "model": "tiny-llama"}
    )
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 64


def test_config_hash_changes_when_a_measured_field_changes() -> None:
    base = ExperimentConfig(model="tiny-llama")
    assert config_hash(base) != config_hash(ExperimentConfig(model="tiny-llama", precision="fp32"))
    batched = ExperimentConfig.model_validate({"model": "tiny-llama", "pytorch": {"batch_size": 1}})
    assert config_hash(base) != config_hash(batched)  # explicit choice differs from None


def test_config_hash_ignores_name_output_dir_and_co2_inputs() -> None:
    base = ExperimentConfig(model="tiny-llama")
    other = ExperimentConfig(
        model="tiny-llama",
        name="x",
        output_dir="sub",
        carbon_intensity_gco2_kwh=10,
        datacenter_pue=1.2,
    )
    assert config_hash(base) == config_hash(other)


def test_canonical_json_is_sorted_compact_ascii() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"\\u00e9","b":1}'


def test_study_design_hash_ignores_gaps_but_not_cycles() -> None:
    study = StudyConfig(base={"model": "tiny-llama"}, sweep={"precision": ["fp32", "bf16"]})
    gaps = study.model_copy(
        update={"execution": study.execution.model_copy(update={"config_gap_seconds": 9})}
    )
    cycles = study.model_copy(
        update={"execution": study.execution.model_copy(update={"n_cycles": 3})}
    )
    renamed = study.model_copy(update={"study_name": "other"})
    assert study_design_hash(study) == study_design_hash(gaps) == study_design_hash(renamed)
    assert study_design_hash(study) != study_design_hash(cycles)


def test_study_design_hash_sees_sweep_order() -> None:
    a = StudyConfig(base={"model": "m"}, sweep={"precision": ["fp32"], "n": [1, 2]})
    b = StudyConfig(base={"model": "m"}, sweep={"n": [1, 2], "precision": ["fp32"]})
    assert study_design_hash(a) != study_design_hash(b)


def test_json_schema_holds_both_models() -> None:
    schema = config_json_schema()
    json.dumps(schema)
    assert "model" in schema["ExperimentConfig"]["required"]
    assert "sweep" in schema["StudyConfig"]["properties"]


def test_field_paths_include_nested_sections() -> None:
    paths = field_paths(ExperimentConfig)
    for expected in (
        "model",
        "pytorch",
        "pytorch.batch_size",
        "vllm.max_num_seqs",
        "decoder.top_p",
        "dataset.input_len",
    ):
        assert expected in paths
