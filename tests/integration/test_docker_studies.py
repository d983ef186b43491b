"""Studies whose experiments run in containers, through the fake docker (tests/fakes/docker):
each backend in its image, the exact ``docker run`` command lines, no secret anywhere, a
failing container recorded with its log, a hung one timed out and removed, Ctrl-C and
resume. All on CPU: the fake runs the container entry point as a local process, and its
"vllm image" has a vLLM stand-in (tests/fakes/vllm_image) that the host venv lacks."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from study_helpers import TINY_BASE, only_study_dir, read_manifest_json
from study_helpers import tiny_study as _tiny_study

from fakes.fake_docker import CRASH_IMAGE, HANG_IMAGE, PYTORCH_IMAGE, VLLM_IMAGE, FakeDocker
from llenergymeasure import run_experiment
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.config.user_config import UserConfig
from llenergymeasure.exceptions import ExperimentError, PreflightError
from llenergymeasure.progress import NullProgress
from llenergymeasure.results.persistence import read_result
from llenergymeasure.study.docker import container_name
from llenergymeasure.study.runner import StudyRunner

pytestmark = pytest.mark.slow

SECRET = "hf_TESTsecretTOKEN0123456789"

#: vLLM's CPU attention has no kernel for tiny-llama's head size 16 (pre-flight rejects it
#: inside the vllm image): these studies use the head-size-64 tiny model for every backend.
BASE = {**TINY_BASE, "model": "tiny-llama-hd64"}


def tiny_study(name: str, sweep: dict[str, Any], **execution: Any) -> StudyConfig:
    """``study_helpers.tiny_study`` on the head-size-64 tiny model."""
    study = _tiny_study(name, sweep, **execution)
    study.base["model"] = BASE["model"]
    return study


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An HF token in the study's environment; HF paths pinned to the test's home."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.chdir(tmp_path)


def _runners(**runners: str) -> UserConfig:
    return UserConfig(runners=runners)


def _run_dir(study_dir: Path, entry: dict[str, Any]) -> Path:
    return (study_dir / entry["result_path"]).parent


def _expected_argv(image: str, study_dir: Path, run_dir: Path, entry: dict[str, Any]) -> list[str]:
    cache = Path(os.environ["XDG_CACHE_HOME"])
    return [
        "docker", "run", "--rm", "--name", container_name(run_dir), "--pull", "never",
        "--init", "--ipc", "host",
        "--label", f"llem.study_dir={study_dir.resolve()}",
        "--label", f"llem.run_dir={run_dir.resolve()}",
        "--label", f"llem.position={entry['position']}",
        "--label", f"llem.cycle={entry['cycle']}",
        "--label", f"llem.config_hash={entry['config_hash']}",
        "--user", f"{os.getuid()}:{os.getgid()}",
        "-e", "HOME=/tmp", "-e", "USER=llem", "-e", "HF_HOME=/llem/hf-cache",
        "-e", "XDG_CACHE_HOME=/llem/cache",
        "-e", "PYTHONUNBUFFERED=1", "-e", "HF_HUB_OFFLINE=1", "-e", "TRANSFORMERS_OFFLINE=1",
        "-e", "HF_DATASETS_OFFLINE=1",
        "--env-file", "<env-file>",
        "-v", f"{run_dir.resolve()}:/llem/run",
        "-v", f"{run_dir.resolve()}/container:/llem/exchange",
        "-v", f"{(cache / 'huggingface').resolve()}:/llem/hf-cache",
        "-v", f"{(cache / 'llenergymeasure').resolve()}:/llem/cache/llenergymeasure",
        "--entrypoint", "python3", image,
        "-m", "llenergymeasure.entrypoints.container",
        "--exchange", "/llem/exchange", "--run-dir", "/llem/run",
    ]  # fmt: skip


def _without_env_file(argv: list[str]) -> tuple[list[str], Path | None]:
    """argv with the (random) env-file path replaced, and that path."""
    if "--env-file" not in argv:
        return argv, None
    i = argv.index("--env-file") + 1
    return [*argv[:i], "<env-file>", *argv[i + 1 :]], Path(argv[i])


def _assert_secret_nowhere(fake: FakeDocker, *roots: Path) -> None:
    """The token is on no command line and in no file under ``roots``."""
    assert all(SECRET not in " ".join(argv) for argv in fake.calls())
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert SECRET.encode() not in path.read_bytes(), path


def test_two_backends_run_each_in_its_image_end_to_end(
    fake_docker: FakeDocker, secret_env: None, tmp_path: Path
) -> None:
    study = tiny_study("two", {"backend": ["pytorch", "vllm"]})
    uc = _runners(pytorch=f"docker:{PYTORCH_IMAGE}", vllm=f"docker:{VLLM_IMAGE}")

    result = StudyRunner(study, results_dir=tmp_path / "results", user_config=uc).run()

    assert result.status == "completed" and result.counts.completed == 2, result.failures
    study_dir = only_study_dir(tmp_path / "results")
    entries = read_manifest_json(study_dir)["entries"]
    assert [e["status"] for e in entries] == ["completed", "completed"]
    calls = fake_docker.calls()
    assert calls[:3] == [
        ["docker", "info", "--format", "{{json .}}"],
        ["docker", "image", "inspect", PYTORCH_IMAGE],
        ["docker", "image", "inspect", VLLM_IMAGE],
    ]
    runs = fake_docker.runs()
    assert len(runs) == 2 and len(calls) == 5  # nothing stopped or removed: --rm did it
    for argv, entry, image in zip(runs, entries, (PYTORCH_IMAGE, VLLM_IMAGE), strict=True):
        run_dir = _run_dir(study_dir, entry)
        shown, env_file = _without_env_file(argv)
        assert shown == _expected_argv(image, study_dir, run_dir, entry)
        assert env_file is not None and not env_file.exists()  # deleted after the run
        assert env_file.parent == Path(tempfile.gettempdir())  # never under the results
        assert sorted(p.name for p in run_dir.iterdir()) == ["container", "result.json"]
        assert sorted(p.name for p in (run_dir / "container").iterdir()) == [
            "container.log",
            "request.json",
        ]
        stored = read_result(run_dir / "result.json")
        assert stored.runner is not None and stored.runner.kind == "docker"
        assert stored.runner.image == image and stored.runner.image_id.startswith("sha256:")  # type: ignore[union-attr]
        assert stored.runner.container_name == container_name(run_dir)
        assert stored.config_hash == entry["config_hash"] and not stored.failed
    backends = [e.config["backend"] for e in result.experiments]
    assert backends == ["pytorch", "vllm"]
    started = [r for r in fake_docker.records() if r.get("env_names")]
    assert all("HF_TOKEN" in r["env_names"] for r in started)  # it reached the containers
    _assert_secret_nowhere(fake_docker, tmp_path / "results", fake_docker.state)
    assert fake_docker.containers() == []


def test_local_and_container_experiments_mix_in_one_study(
    fake_docker: FakeDocker, secret_env: None, tmp_path: Path
) -> None:
    study = tiny_study("mix", {"backend": ["pytorch", "vllm"]})

    result = StudyRunner(
        study, results_dir=tmp_path / "results", user_config=_runners(vllm=f"docker:{VLLM_IMAGE}")
    ).run()

    assert result.status == "completed", result.failures
    kinds = {e.config["backend"]: e.runner.kind for e in result.experiments if e.runner}
    assert kinds == {"pytorch": "local", "vllm": "docker"}
    [run] = fake_docker.runs()
    assert run[run.index("--entrypoint") + 2] == VLLM_IMAGE
    assert [c[1] for c in fake_docker.calls()] == ["info", "image", "run"]


def test_failed_containers_are_recorded_with_their_error_and_log(
    fake_docker: FakeDocker, secret_env: None, tmp_path: Path
) -> None:
    study = tiny_study("fail", {"backend": ["pytorch", "vllm"]}, max_consecutive_failures=5)
    study.base["dataset"] = str(tmp_path / "missing.jsonl")  # fails inside the vllm image
    uc = _runners(pytorch=f"docker:{CRASH_IMAGE}", vllm=f"docker:{VLLM_IMAGE}")

    result = StudyRunner(study, results_dir=tmp_path / "results", user_config=uc).run()

    assert result.status == "failed" and result.counts.failed == 2
    crashed, raised = result.failures
    assert crashed.reason == "container exited with code 3"
    study_dir = only_study_dir(tmp_path / "results")
    crash_text = (study_dir / crashed.failure_path).read_text()  # type: ignore[operator]
    assert "fake container: simulated crash in native code" in crash_text  # the log
    assert "container: llem-fail_backend-pytorch_" in crash_text and CRASH_IMAGE in crash_text
    assert raised.reason is not None and raised.reason.startswith("PreflightError")
    raised_text = (study_dir / raised.failure_path).read_text()  # type: ignore[operator]
    assert "Traceback" in raised_text and "missing.jsonl': no such file" in raised_text
    assert [e["status"] for e in read_manifest_json(study_dir)["entries"]] == ["failed"] * 2
    _assert_secret_nowhere(fake_docker, tmp_path / "results")
    assert fake_docker.containers() == []


def test_a_hung_container_is_timed_out_stopped_and_removed(
    fake_docker: FakeDocker, secret_env: None, tmp_path: Path
) -> None:
    study = tiny_study("hang", {"max_output_tokens": [2]}, experiment_timeout_seconds=2)
    uc = _runners(pytorch=f"docker:{HANG_IMAGE}")
    cpu0, wall0 = time.process_time(), time.monotonic()

    result = StudyRunner(study, results_dir=tmp_path / "results", user_config=uc).run()

    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    assert cpu_s < 0.5 * wall_s, (cpu_s, wall_s)  # it blocked on the output, never spun
    [failure] = result.failures
    assert failure.reason == "timed out after 2 s"
    [run] = fake_docker.runs()
    name = run[run.index("--name") + 1]
    assert fake_docker.calls()[-2:] == [
        ["docker", "stop", "--time", "10", name],
        ["docker", "rm", "-f", name],
    ]
    assert fake_docker.containers() == []
    pid = fake_docker.started()[name]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    text = (only_study_dir(tmp_path / "results") / failure.failure_path).read_text()  # type: ignore[operator]
    assert f"the container {name} was stopped and removed" in text
    assert "fake container: waiting for a signal" in text  # its log


class _InterruptAtFirstStage(NullProgress):
    """Raises KeyboardInterrupt (as Ctrl-C would) when the running container reports."""

    def __init__(self) -> None:
        self.raised = False

    def stage(self, name: str) -> None:
        if not self.raised:
            self.raised = True
            raise KeyboardInterrupt


def test_ctrl_c_removes_the_container_and_resume_cleans_up_and_finishes(
    fake_docker: FakeDocker, secret_env: None, tmp_path: Path
) -> None:
    study = tiny_study("ctrlc", {"backend": ["vllm"]})
    uc = _runners(vllm=f"docker:{VLLM_IMAGE}")
    results = tmp_path / "results"

    with pytest.raises(KeyboardInterrupt):
        StudyRunner(
            study, results_dir=results, user_config=uc, progress=_InterruptAtFirstStage()
        ).run()

    study_dir = only_study_dir(results)
    manifest = read_manifest_json(study_dir)
    assert manifest["status"] == "interrupted"
    assert [e["status"] for e in manifest["entries"]] == ["pending"]
    [run] = fake_docker.runs()
    name = run[run.index("--name") + 1]
    assert ["docker", "rm", "-f", name] in fake_docker.calls()
    assert fake_docker.containers() == []
    # A container an earlier run left behind (its study process was killed): resume stops it.
    leftover_name, leftover = _leftover_container(fake_docker, study_dir)

    again = StudyRunner(study, results_dir=results, user_config=uc, resume=True).run()

    assert again.status == "completed" and again.study_dir == str(study_dir)
    assert ["docker", "rm", "-f", leftover_name] in fake_docker.calls()
    assert leftover.wait(timeout=30) == -signal.SIGTERM  # docker stop
    assert fake_docker.containers() == []


def _leftover_container(fake: FakeDocker, study_dir: Path) -> tuple[str, psutil.Popen]:
    """A running container, as the fake keeps one, labelled with ``study_dir``."""
    process = psutil.Popen(
        [sys.executable, "-c", "import signal; signal.pause()"], start_new_session=True
    )
    name = "llem-leftover-0000"
    fake.state.mkdir(parents=True, exist_ok=True)
    labels = {"llem.study_dir": str(study_dir.resolve())}
    record = {"name": name, "pid": process.pid, "labels": labels, "image": VLLM_IMAGE}
    (fake.state / f"{name}.json").write_text(json.dumps(record))
    return name, process


def test_preflight_problems_stop_the_study_before_any_directory(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    fake_docker.set_images(PYTORCH_IMAGE)
    study = tiny_study("pre", {"backend": ["pytorch", "vllm"]}, experiment_timeout_seconds=60)
    study.base["device"] = "cuda"
    uc = _runners(pytorch=f"docker:{PYTORCH_IMAGE}", vllm="docker:llem-vllm:missing")

    with pytest.raises(PreflightError) as err:
        StudyRunner(study, results_dir=tmp_path / "results", user_config=uc).run()

    assert len(err.value.problems) == 2  # runtime and image, together
    assert "NVIDIA container runtime" in err.value.problems[0]
    assert "docker build -f docker/vllm.Dockerfile" in err.value.problems[1]
    assert not (tmp_path / "results").exists()
    assert fake_docker.runs() == []


def test_a_single_experiment_runs_in_its_backends_container(
    fake_docker: FakeDocker, secret_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLEM_RUNNERS__VLLM", f"docker:{VLLM_IMAGE}")

    result = run_experiment(backend="vllm", results_dir=tmp_path / "out", **BASE)

    assert not result.failed and result.runner is not None and result.runner.image == VLLM_IMAGE
    [run] = fake_docker.runs()
    assert Path(result.run_dir) == Path(run[run.index("-v") + 1].split(":")[0])  # type: ignore[arg-type]
    monkeypatch.setenv("LLEM_RUNNERS__VLLM", f"docker:{CRASH_IMAGE}")
    with pytest.raises(ExperimentError, match="container exited with code 3") as err:
        run_experiment(backend="vllm", results_dir=tmp_path / "out", **BASE)
    assert "container.log" in str(err.value)
    _assert_secret_nowhere(fake_docker, tmp_path / "out")


def test_an_experiment_whose_gpus_cannot_be_routed_fails_alone_without_a_container(
    fake_docker: FakeDocker, secret_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker.set_runtimes("runc", "nvidia")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    study = tiny_study("route", {"gpus": [[1], [5]]}, max_consecutive_failures=5)
    study.base["device"] = "cuda"
    uc = _runners(pytorch=f"docker:{CRASH_IMAGE}")

    result = StudyRunner(study, results_dir=tmp_path / "results", user_config=uc).run()

    first, second = result.failures
    assert first.reason == "container exited with code 3"  # routed: --gpus "device=1"
    assert second.reason is not None and second.reason.startswith("container not started: gpus")
    assert "CUDA_VISIBLE_DEVICES=0,1 lists 2" in second.reason
    [run] = fake_docker.runs()
    assert run[run.index("--gpus") + 1] == '"device=1"'
    assert run[run.index("-e") : run.index("-e") + 2] == ["-e", "CUDA_VISIBLE_DEVICES=0"]
