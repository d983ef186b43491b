"""Loading configs: every bad input names the problem, the field, the line and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llenergymeasure.config.loader import (
    experiment_from_kwargs,
    load_config,
    load_experiment_config,
    load_study_config,
)
from llenergymeasure.config.user_config import UserConfig
from llenergymeasure.exceptions import ConfigError, ConfigIssue, ConfigValidationError
from llenergymeasure.study.grid import plan_loaded


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a dedented YAML file and return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def issues_of(path: Path | None, overrides: dict | None = None) -> list[ConfigIssue]:
    """The issues load_config raises for ``path``."""
    with pytest.raises(ConfigValidationError) as info:
        load_config(path, overrides, user_config=UserConfig())
    return info.value.issues


def only_issue(path: Path | None, overrides: dict | None = None) -> ConfigIssue:
    """The single issue raised for ``path``."""
    issues = issues_of(path, overrides)
    assert len(issues) == 1, [i.render() for i in issues]
    return issues[0]


# ---- good files ---------------------------------------------------------------------------
def test_experiment_file_loads_with_file_and_default_provenance(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\nn: 7\npytorch:\n  batch_size: 4\n")
    loaded = load_config(path, user_config=UserConfig())
    assert loaded.kind == "experiment" and loaded.experiment is not None
    assert loaded.experiment.n == 7 and loaded.experiment.backend_section.batch_size == 4
    assert loaded.provenance["n"] == "file"
    assert loaded.provenance["pytorch.batch_size"] == "file"
    assert loaded.provenance["precision"] == "default"
    assert loaded.source_path == path.resolve()


def test_experiment_file_is_wrapped_in_a_one_experiment_study(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "name: quick\nmodel: tiny-llama\n")
    study = load_config(path, user_config=UserConfig()).study
    assert study.study_name == "quick"
    assert study.experiments == [{"name": "quick", "model": "tiny-llama"}]


def test_cli_overrides_win_and_are_marked_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\nn: 7\npytorch:\n  batch_size: 4\n")
    loaded = load_config(path, {"n": 3, "pytorch.batch_size": 8, "precision": None})
    assert loaded.experiment is not None
    assert (loaded.experiment.n, loaded.experiment.backend_section.batch_size) == (3, 8)
    assert loaded.provenance["n"] == "cli" and loaded.provenance["pytorch.batch_size"] == "cli"
    assert loaded.provenance["precision"] == "default"  # None override = not given


def test_overrides_alone_build_an_experiment() -> None:
    loaded = load_config(None, {"model": "tiny-llama", "n": 20}, user_config=UserConfig())
    assert loaded.experiment is not None and loaded.experiment.n == 20
    assert loaded.source_path is None and loaded.provenance["model"] == "cli"
    assert loaded.study.study_name == "experiment"


def test_user_config_supplies_energy_backend_and_co2_inputs() -> None:
    uc = UserConfig.model_validate({"measurement": {"energy_backend": "nvml"}})
    uc._provenance = {"measurement.energy_backend": "file"}
    loaded = load_config(None, {"model": "tiny-llama"}, user_config=uc)
    assert loaded.experiment is not None and loaded.experiment.energy_backend == "nvml"
    assert loaded.provenance["energy_backend"] == "user_config"
    assert loaded.experiment.carbon_intensity_gco2_kwh == uc.measurement.carbon_intensity_gco2_kwh
    assert loaded.provenance["carbon_intensity_gco2_kwh"] == "default"


def test_file_beats_user_config(tmp_path: Path) -> None:
    uc = UserConfig.model_validate({"measurement": {"energy_backend": "nvml"}})
    uc._provenance = {"measurement.energy_backend": "file"}
    path = write(tmp_path, "e.yaml", "model: tiny-llama\nenergy_backend: rapl\n")
    loaded = load_config(path, user_config=uc)
    assert loaded.experiment is not None and loaded.experiment.energy_backend == "rapl"
    assert loaded.provenance["energy_backend"] == "file"


def test_extends_chain_deep_merges_child_wins(tmp_path: Path) -> None:
    write(
        tmp_path,
        "root.yaml",
        "model: gpt2\nn: 5\npytorch:\n  batch_size: 2\n  sort_by_length: true\n",
    )
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/mid.yaml", "_extends: ../root.yaml\nmodel: tiny-llama\n")
    leaf = write(tmp_path, "sub/leaf.yaml", "_extends: mid.yaml\npytorch:\n  batch_size: 8\n")
    cfg = load_experiment_config(leaf, user_config=UserConfig())
    assert cfg.model == "tiny-llama" and cfg.n == 5
    assert cfg.backend_section.batch_size == 8 and cfg.backend_section.sort_by_length is True


def test_error_in_extended_file_points_at_that_file(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.yaml", "model: tiny-llama\nwarmup:\n  n_warmpu: 2\n")
    child = write(tmp_path, "child.yaml", "_extends: parent.yaml\nn: 4\n")
    issue = only_issue(child)
    assert issue.path == "warmup.n_warmpu"
    assert (issue.file, issue.line) == (str(parent.resolve()), 3)
    assert "n_warmup" in (issue.fix or "")


def test_experiment_from_kwargs_accepts_nested_and_dotted() -> None:
    cfg = experiment_from_kwargs(
        model="tiny-llama", pytorch={"batch_size": 2}, **{"decoder.num_beams": 1}
    )
    assert cfg.backend_section.batch_size == 2 and cfg.decoder.num_beams == 1


def test_study_file_detected_and_provenance_covers_base_and_execution(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """
        study_name: sweep1
        base:
          model: tiny-llama
        sweep:
          precision: [fp32, bf16]
        execution:
          n_cycles: 2
        """,
    )
    loaded = load_config(path, {"execution.order": "grouped"}, user_config=UserConfig())
    assert loaded.kind == "study" and loaded.experiment is None
    assert loaded.study.execution.order == "grouped"
    assert loaded.provenance["base.model"] == "file"
    assert loaded.provenance["execution.n_cycles"] == "file"
    assert loaded.provenance["execution.order"] == "cli"
    assert loaded.provenance["execution.config_gap_seconds"] == "user_config"
    assert loaded.provenance["execution.shuffle_seed"] == "default"
    assert load_study_config(path, user_config=UserConfig()).study_name == "sweep1"


def test_experiment_overrides_on_a_study_fix_swept_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        "base:\n  model: tiny-llama\nsweep:\n  precision: [fp32, bf16]\n  n: [1, 2]\n",
    )
    loaded = load_config(path, {"precision": "fp16"}, user_config=UserConfig())
    assert "precision" not in loaded.study.sweep and loaded.study.base["precision"] == "fp16"
    assert any("precision" in note for note in loaded.notes)
    plan = plan_loaded(loaded)
    assert {e.config.precision for e in plan.unique_configs} == {"fp16"}
    assert plan.unique_configs[0].provenance["precision"] == "cli"


def test_load_experiment_config_refuses_a_study(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "base:\n  model: tiny-llama\n")
    with pytest.raises(ConfigError, match="is a study"):
        load_experiment_config(path, user_config=UserConfig())


# ---- one test per bad input ---------------------------------------------------------------
def test_typo_key_gets_did_you_mean_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\npytorch:\n  bacth_size: 8\n")
    issue = only_issue(path)
    assert issue.path == "pytorch.bacth_size" and issue.line == 3
    assert "unknown key 'bacth_size'" in issue.message
    assert issue.fix == "did you mean 'batch_size'?"


def test_backend_field_at_top_level_points_to_its_section(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\nbacth_size: 8\n")
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("bacth_size", 2)
    assert "'batch_size'" in (issue.fix or "") and "pytorch" in (issue.fix or "")


def test_unquoted_null_energy_backend_says_to_quote_it(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, "e.yaml", "model: tiny-llama\nenergy_backend: null\n"))
    assert (issue.path, issue.line) == ("energy_backend", 2)
    assert "quotes" in (issue.fix or "")


def test_wrong_type_says_expected_and_given(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\nn: abc\n")
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("n", 2)
    assert issue.message == "expected an integer, got 'abc'"


def test_missing_required_model(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "n: 5\n")
    issue = only_issue(path)
    assert issue.path == "model" and issue.message == "required field missing"
    assert "tiny-llama" in (issue.fix or "")


def test_literal_error_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\nbackend: jax\n")
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("backend", 2)
    assert "'pytorch', 'vllm' or 'tensorrt'" in (issue.fix or "")


def test_backend_section_that_does_not_match_backend(tmp_path: Path) -> None:
    path = write(
        tmp_path, "e.yaml", "model: tiny-llama\nbackend: pytorch\nvllm:\n  max_num_seqs: 4\n"
    )
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("vllm", 3)
    assert "'vllm:' section" in issue.message and "set backend: vllm" in (issue.fix or "")


def test_precision_the_backend_does_not_support(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\nbackend: vllm\nprecision: int4\n")
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("precision", 3)
    assert "not supported by the vllm backend" in issue.message
    assert "fp8" in (issue.fix or "") and "int4" not in (issue.fix or "")


def test_yaml_syntax_error_shows_line(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\npytorch:\n  batch_size: [1, 2\nn: 3\n")
    issue = only_issue(path)
    assert "YAML syntax error" in issue.message and issue.line == 4
    assert issue.file == str(path.resolve())


def test_missing_file(tmp_path: Path) -> None:
    issue = only_issue(tmp_path / "nope.yaml")
    assert issue.message == "file not found" and "check the path" in (issue.fix or "")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    issue = only_issue(tmp_path)
    assert "is a directory" in issue.message


def test_empty_file(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, "e.yaml", "\n# only a comment\n"))
    assert "empty" in issue.message or "no settings" in issue.message
    assert "model:" in (issue.fix or "")


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, "e.yaml", "- model: tiny-llama\n"))
    assert "not a mapping" in issue.message and issue.line == 1


def test_extends_cycle_names_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "_extends: b.yaml\nmodel: tiny-llama\n")
    b = write(tmp_path, "b.yaml", "n: 3\n_extends: a.yaml\n")
    issue = only_issue(tmp_path / "a.yaml")
    assert "_extends cycle" in issue.message
    assert "a.yaml -> " in issue.message and "b.yaml -> " in issue.message
    assert (issue.file, issue.line) == (str(b.resolve()), 2)


def test_extends_missing_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "_extends: gone.yaml\nmodel: tiny-llama\n")
    issue = only_issue(path)
    assert issue.path == "_extends" and issue.line == 1 and "gone.yaml" in issue.message


def test_negative_n(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, "e.yaml", "model: tiny-llama\nn: -5\n"))
    assert (issue.path, issue.line) == ("n", 2) and issue.message == "must be >= 1, got -5"


def test_absurd_n(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, "e.yaml", "model: tiny-llama\nn: 5000000\n"))
    assert issue.path == "n" and "absurd" in issue.message and "1,000,000" in (issue.fix or "")


def test_study_name_escaping_results_dir(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "study_name: ../../etc\nbase:\n  model: tiny-llama\n")
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("study_name", 1)
    assert "not a safe directory name" in issue.message and "'..'" in (issue.fix or "")


def test_output_dir_escaping_results_dir(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\noutput_dir: /tmp/elsewhere\n")
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("output_dir", 2)
    assert "would escape the results directory" in issue.message


def test_duplicate_key(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, "e.yaml", "model: tiny-llama\nn: 3\nn: 4\n"))
    assert (issue.path, issue.line) == ("n", 3) and "duplicate key" in issue.message


def test_model_level_decoder_error_maps_to_field(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\ndecoder:\n  temperature: 0.7\n")
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("decoder.temperature", 3)
    assert "strategy: sample" in (issue.fix or "")


def test_bad_override_is_attributed_to_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", "model: tiny-llama\n")
    issue = only_issue(path, {"pytorch.batch_size": "lots"})
    assert issue.path == "pytorch.batch_size" and issue.file == "command line"


def test_conflicting_overrides() -> None:
    issue = only_issue(None, {"model": "tiny-llama", "pytorch": 3, "pytorch.batch_size": 2})
    assert issue.path == "pytorch.batch_size" and "conflicts" in issue.message


def test_all_problems_of_a_file_reported_together_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "e.yaml",
        "model: tiny-llama\npytorch:\n  bacth_size: 8\ndecoder:\n  temperature: abc\nn: -3\n",
    )
    issues = issues_of(path)
    assert [(i.path, i.line) for i in issues] == [
        ("pytorch.bacth_size", 3),
        ("decoder.temperature", 5),
        ("n", 6),
    ]


def test_study_problems_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """
        base:
          model: tiny-llama
          bacth_size: 3
        sweep:
          precision: [bf16, fp99]
          pytorch.batch_sz: [1, 2]
        experiments:
          - precison: fp32
        execution:
          order: random
        """,
    )
    found = {i.path: i for i in issues_of(path)}
    assert set(found) == {
        "base.bacth_size",
        "sweep.precision.1",
        "sweep.pytorch.batch_sz",
        "experiments.0.precison",
        "execution.order",
    }
    assert found["base.bacth_size"].line == 3
    assert found["sweep.pytorch.batch_sz"].fix == "did you mean 'pytorch.batch_size'?"
    assert found["experiments.0.precison"].line == 8
    assert "did you mean 'precision'" in (found["experiments.0.precison"].fix or "")
    assert found["execution.order"].line == 10


def test_nothing_to_load() -> None:
    with pytest.raises(ConfigError, match="nothing to load"):
        load_config(None, {}, user_config=UserConfig())


def test_loading_layer_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, llenergymeasure.config.loader, llenergymeasure.study.grid, "
        "llenergymeasure.core.memory; from llenergymeasure.config.loader import load_config; "
        "load_config(None, {'model': 'tiny-llama'}); "
        "print('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cross_field_problems_reported_with_field_errors(tmp_path: Path) -> None:
    """A typo, a wrong type, a foreign backend section and an unsupported precision: all four
    come back from one load, each with its line (pydantic alone would hold back the last two
    until the first two were fixed)."""
    path = write(
        tmp_path,
        "e.yaml",
        """
        model: tiny-llama
        backend: vllm
        precision: int4
        nn: 5
        max_output_tokens: lots
        pytorch:
          batch_size: 8
        """,
    )
    by_path = {i.path: i for i in issues_of(path)}
    assert set(by_path) == {"nn", "max_output_tokens", "pytorch", "precision"}
    assert by_path["precision"].line == 3
    assert "not supported by the vllm backend" in by_path["precision"].message
    assert by_path["precision"].fix is not None and "fp16" in by_path["precision"].fix
    assert by_path["pytorch"].line == 6 and "backend: pytorch" in (by_path["pytorch"].fix or "")
