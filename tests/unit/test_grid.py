"""Study expansion: product order, backend-scoped keys, skipped points, cycles and orders."""

from __future__ import annotations

import random

import pytest

from llenergymeasure.config.hashing import config_hash
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.config.user_config import UserConfig
from llenergymeasure.exceptions import ConfigValidationError
from llenergymeasure.study.grid import expand_study


def grid_study(order: str = "interleaved", seed: int | None = None) -> StudyConfig:
    """2 precisions × 3 batch sizes × 2 cycles."""
    return StudyConfig.model_validate(
        {
            "study_name": "g",
            "base": {"model": "tiny-llama"},
            "sweep": {"precision": ["fp32", "bf16"], "pytorch.batch_size": [1, 2, 4]},
            "execution": {"n_cycles": 2, "order": order, "shuffle_seed": seed},
        }
    )


UNIQUE_LABELS = [f"precision={p} batch_size={b}" for p in ("fp32", "bf16") for b in (1, 2, 4)]


def test_interleaved_order() -> None:
    plan = expand_study(grid_study())
    assert len(plan.experiments) == 12 and len(plan.unique_configs) == 6
    assert [e.label for e in plan.experiments] == UNIQUE_LABELS * 2
    assert [e.cycle for e in plan.experiments] == [1] * 6 + [2] * 6
    assert [e.position for e in plan.experiments] == list(range(12))
    assert plan.experiments[3].config.precision == "bf16"
    assert plan.experiments[3].config.backend_section.batch_size == 1


def test_grouped_order() -> None:
    plan = expand_study(grid_study("grouped"))
    assert [e.label for e in plan.experiments] == [x for x in UNIQUE_LABELS for _ in (1, 2)]
    assert [e.cycle for e in plan.experiments] == [1, 2] * 6


def test_shuffled_order_uses_the_seed() -> None:
    plan = expand_study(grid_study("shuffled", seed=7))
    rng = random.Random(7)
    expected = []
    for _ in range(2):
        cycle = list(UNIQUE_LABELS)
        rng.shuffle(cycle)
        expected += cycle
    assert [e.label for e in plan.experiments] == expected
    assert [e.cycle for e in plan.experiments] == [1] * 6 + [2] * 6
    assert plan.shuffle_seed == 7


def test_shuffled_without_seed_records_one() -> None:
    plan = expand_study(grid_study("shuffled"))
    assert isinstance(plan.shuffle_seed, int)
    assert plan.study is not None and plan.study.execution.shuffle_seed == plan.shuffle_seed
    again = expand_study(grid_study("shuffled", seed=plan.shuffle_seed))
    assert [e.label for e in again.experiments] == [e.label for e in plan.experiments]


def test_names_are_safe_and_distinct() -> None:
    plan = expand_study(grid_study())
    names = [u.config.name for u in plan.unique_configs]
    assert names[0] == "g_precision-fp32_batch_size-1" and len(set(names)) == 6


def test_backend_scoped_key_applies_only_to_its_backend() -> None:
    study = StudyConfig.model_validate(
        {
            "base": {"model": "tiny-llama"},
            "sweep": {
                "backend": ["pytorch", "vllm"],
                "pytorch.batch_size": [1, 8],
                "vllm.max_num_seqs": [16, 64],
            },
        }
    )
    plan = expand_study(study)
    assert [u.label for u in plan.unique_configs] == [
        "backend=pytorch batch_size=1",
        "backend=pytorch batch_size=8",
        "backend=vllm max_num_seqs=16",
        "backend=vllm max_num_seqs=64",
    ]
    vllm_cfg = plan.unique_configs[2].config
    assert (
        vllm_cfg.pytorch is None and vllm_cfg.vllm is not None and vllm_cfg.vllm.max_num_seqs == 16
    )
    assert not plan.skipped and not plan.notes


def test_invalid_point_is_skipped_with_reason() -> None:
    study = StudyConfig.model_validate(
        {
            "base": {"model": "tiny-llama", "backend": "vllm"},
            "sweep": {"precision": ["bf16", "int4"]},
        }
    )
    plan = expand_study(study)
    assert [u.config.precision for u in plan.unique_configs] == ["bf16"]
    (skip,) = plan.skipped
    assert skip.point == {"precision": "int4"}
    assert "not supported by the vllm backend" in skip.reason and "fp8" in skip.reason


def test_every_point_invalid_is_an_error() -> None:
    study = StudyConfig.model_validate(
        {"base": {"model": "m", "backend": "vllm"}, "sweep": {"precision": ["int4", "int8"]}}
    )
    with pytest.raises(ConfigValidationError, match="not supported by the vllm backend"):
        expand_study(study)


def test_explicit_experiments_merge_over_base_after_the_sweep() -> None:
    study = StudyConfig.model_validate(
        {
            "study_name": "e",
            "base": {"model": "tiny-llama", "n": 4},
            "sweep": {"precision": ["fp32"]},
            "experiments": [{"name": "big", "n": 8}, {"pytorch": {"batch_size": 2}}],
        }
    )
    plan = expand_study(study)
    configs = [u.config for u in plan.unique_configs]
    assert [c.n for c in configs] == [4, 8, 4]
    assert configs[1].name == "big" and configs[2].backend_section.batch_size == 2
    assert plan.unique_configs[2].label == "batch_size=2"


def test_duplicates_collapse_with_a_note() -> None:
    study = StudyConfig.model_validate(
        {"base": {"model": "tiny-llama"}, "experiments": [{"n": 5}, {"n": 5, "name": "same"}]}
    )
    plan = expand_study(study)
    assert len(plan.unique_configs) == 1 and "identical" in plan.notes[0]


def test_base_alone_is_one_experiment_named_after_the_study() -> None:
    plan = expand_study(
        StudyConfig.model_validate({"study_name": "solo", "base": {"model": "tiny-llama"}})
    )
    (only,) = plan.experiments
    assert only.config.name == "solo" and only.label == ""
    assert only.config_hash == config_hash(only.config)


def test_cli_overrides_and_user_config_layers_with_provenance() -> None:
    uc = UserConfig.model_validate(
        {"measurement": {"energy_backend": "nvml", "datacenter_pue": 1.4}}
    )
    uc._provenance = {"measurement.energy_backend": "file", "measurement.datacenter_pue": "file"}
    plan = expand_study(
        grid_study(), user_config=uc, cli_overrides={"pytorch.batch_size": 16, "n": 3}
    )
    assert [u.label for u in plan.unique_configs] == ["precision=fp32", "precision=bf16"]
    cfg = plan.unique_configs[0].config
    assert cfg.backend_section.batch_size == 16 and cfg.n == 3 and cfg.energy_backend == "nvml"
    prov = plan.unique_configs[0].provenance
    assert prov["n"] == "cli" and prov["pytorch.batch_size"] == "cli"
    assert prov["precision"] == "file" and prov["energy_backend"] == "user_config"
    assert prov["max_output_tokens"] == "default"
    assert any("pytorch.batch_size" in n for n in plan.notes)


def test_scoped_key_for_an_absent_backend_is_noted() -> None:
    study = StudyConfig.model_validate(
        {"base": {"model": "tiny-llama"}, "sweep": {"n": [1, 2], "vllm.max_num_seqs": [4]}}
    )
    plan = expand_study(study)
    assert len(plan.unique_configs) == 2 and "applies to no experiment" in plan.notes[0]


def test_design_hash_matches_the_study() -> None:
    from llenergymeasure.config.hashing import study_design_hash

    study = grid_study()
    assert expand_study(study).design_hash == study_design_hash(study)
