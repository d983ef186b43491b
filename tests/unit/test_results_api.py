"""The public entry points' input handling, and the single-experiment StudyResult wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest
from results_factory import gpu_report, raw, timing

from llenergymeasure import run_experiment, run_study
from llenergymeasure._api import wrap_single_result
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.exceptions import ConfigError
from llenergymeasure.results.aggregation import aggregate_process_results


def test_run_experiment_refuses_a_study_file(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text("study_name: s\nbase: {model: tiny-llama}\nsweep: {n: [1, 2]}\n")
    with pytest.raises(ConfigError, match="run_study"):
        run_experiment(study, results_dir=tmp_path)
    assert not any(p.is_dir() for p in tmp_path.iterdir())


def test_bad_config_types_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a YAML path"):
        run_experiment(42, results_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="base:"):
        run_study(StudyConfig(base={"model": "tiny-llama"}), results_dir=tmp_path, n=3)
    with pytest.raises(ConfigError, match="nothing to load"):
        run_experiment(results_dir=tmp_path)


def test_single_result_is_wrapped_as_a_completed_study(tmp_path: Path) -> None:
    result = aggregate_process_results(
        [raw(0, 1, [timing(0.0, [0.1, 0.02])] * 2, gpu_report({"gpu:0": 8.0}, 10.0))]
    )
    study = wrap_single_result(StudyConfig(base={"model": "tiny-llama"}), result, tmp_path, 30.0)
    assert study.status == "completed" and study.counts.completed == 1
    assert study.experiments == [result]
    (summary,) = study.configs
    stats = summary.metrics["j_per_output_token"].stats
    assert stats is not None and stats.mean == pytest.approx(8.0 / 4)
    assert summary.metrics["energy_j"].stats is not None
    assert study.timing.outside_measurement_s == pytest.approx(30.0 - 10.0)


def test_explicit_auto_energy_backend_is_not_overridden_by_user_config() -> None:
    """The user config fills energy_backend only when the experiment did not set it."""
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.orchestration.orchestrator import _with_user_defaults

    user = UserConfig.model_validate({"measurement": {"energy_backend": "null"}})
    unset = ExperimentConfig(model="tiny-llama")
    explicit = ExperimentConfig(model="tiny-llama", energy_backend="auto")
    assert _with_user_defaults(unset, user).energy_backend == "null"
    assert _with_user_defaults(explicit, user).energy_backend == "auto"
