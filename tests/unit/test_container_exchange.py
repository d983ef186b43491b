"""The exchange-directory protocol between a study and a container, and the container entry
point run as a plain process (no docker): request in, result.json or error.json out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llenergymeasure.config.hashing import config_hash
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.domain.results import RunnerContext
from llenergymeasure.exceptions import ExperimentError
from llenergymeasure.orchestration.orchestrator import ExperimentOrchestrator
from llenergymeasure.results.persistence import read_result
from llenergymeasure.study.exchange import (
    PROTOCOL_VERSION,
    ErrorReport,
    parse_progress_line,
    progress_line,
    read_error,
    read_request,
    request_for,
    write_error,
    write_request,
)
from llenergymeasure.study.worker import PromptsMessage, StageMessage

TINY = {
    "model": "tiny-llama",
    "device": "cpu",
    "precision": "fp32",
    "n": 2,
    "max_input_tokens": 16,
    "max_output_tokens": 3,
    "warmup": {"n_warmup": 0},
    "baseline": {"enabled": False},
    "telemetry": {"enabled": False},
}


def test_request_round_trips_to_an_equal_config_with_the_same_hash(tmp_path: Path) -> None:
    config = ExperimentConfig(**TINY, pytorch={"batch_size": 2})
    runner = RunnerContext(kind="docker", spec="docker:img", image="img", image_id="sha256:1")
    write_request(tmp_path, request_for(config, provenance={"n": "file"}, runner=runner))

    back = read_request(tmp_path)

    again = back.experiment_config()
    assert again == config and again.model_fields_set == config.model_fields_set
    assert config_hash(again) == config_hash(config)
    assert back.provenance == {"n": "file"} and back.runner == runner
    assert back.config_in_container() == config  # no GPU translation asked for


def test_gpu_ordinals_translate_only_the_config_the_container_runs() -> None:
    config = ExperimentConfig(model="tiny-llama", gpus=[3, 1])
    request = request_for(config, gpu_ordinals=[1, 0])
    assert request.experiment_config().gpus == [3, 1]
    assert request.config_in_container().gpus == [1, 0]


def test_orchestrator_records_the_study_config_when_running_a_translation(
    tmp_path: Path,
) -> None:
    planned = ExperimentConfig(model="tiny-llama", gpus=[3])
    inside = planned.model_copy(update={"gpus": [0]})
    orchestrator = ExperimentOrchestrator(inside, {}, results_dir=tmp_path, recorded_config=planned)
    assert orchestrator.record.config["gpus"] == [3]
    assert orchestrator.record.config_hash == config_hash(planned)
    assert orchestrator.config.gpus == [0]
    assert orchestrator.record.runner == RunnerContext()  # local unless told


def test_a_request_from_another_protocol_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "request.json").write_text(
        json.dumps({"protocol": PROTOCOL_VERSION + 1, "llem_version": "9.9", "config": {}})
    )
    with pytest.raises(ExperimentError, match="rebuild the image"):
        read_request(tmp_path)


def test_progress_lines_round_trip_and_other_lines_are_log() -> None:
    for message in (StageMessage("loading model"), PromptsMessage(3, 8)):
        assert parse_progress_line(progress_line(message)) == message
    assert parse_progress_line("INFO loading weights") is None
    assert parse_progress_line("@@llem-progress {not json") is None


def test_error_report_missing_written_and_unreadable(tmp_path: Path) -> None:
    assert read_error(tmp_path) is None
    write_error(tmp_path, ErrorReport(reason="ValueError: boom", traceback="Traceback ..."))
    assert read_error(tmp_path) == ErrorReport(reason="ValueError: boom", traceback="Traceback ...")
    (tmp_path / "error.json").write_text("{")
    unreadable = read_error(tmp_path)
    assert unreadable is not None and "unreadable error.json" in unreadable.reason


ENTRYPOINT = (sys.executable, "-m", "llenergymeasure.entrypoints.container")


def _entrypoint(exchange: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENTRYPOINT[0], *ENTRYPOINT[1:], "--exchange", str(exchange), "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_entrypoint_writes_the_result_into_the_run_dir_with_the_runner(tmp_path: Path) -> None:
    run_dir, exchange = tmp_path / "run", tmp_path / "run" / "container"
    exchange.mkdir(parents=True)
    runner = RunnerContext(kind="docker", spec="docker:img", image="img", image_id="sha256:ab")
    config = ExperimentConfig(**TINY)
    write_request(exchange, request_for(config, runner=runner))

    done = _entrypoint(exchange, run_dir)

    assert done.returncode == 0, done.stderr
    result = read_result(run_dir / "result.json")
    assert not result.failed and result.runner == runner
    assert result.config_hash == config_hash(config)
    stages = [parse_progress_line(line) for line in done.stdout.splitlines()]
    assert StageMessage("measuring") in stages and all(stages)  # stdout: progress only
    assert not (exchange / "error.json").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["container", "result.json"]


def test_entrypoint_failure_writes_error_json(tmp_path: Path) -> None:
    run_dir, exchange = tmp_path / "run", tmp_path / "run" / "container"
    exchange.mkdir(parents=True)
    config = ExperimentConfig(**{**TINY, "dataset": str(tmp_path / "missing.jsonl")})
    write_request(exchange, request_for(config))

    done = _entrypoint(exchange, run_dir)

    assert done.returncode == 1
    error = read_error(exchange)
    assert error is not None and error.error_type == "PreflightError"
    assert "missing.jsonl" in error.traceback and "no such file" in error.traceback


def test_entrypoint_without_a_request_exits_2_with_error_json(tmp_path: Path) -> None:
    done = _entrypoint(tmp_path, tmp_path / "run")
    assert done.returncode == 2
    error = read_error(tmp_path)
    assert error is not None and "cannot read the request" in error.reason
