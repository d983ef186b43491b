"""The Docker runner's pure parts (command line, GPU routing, env-file, input mounts) and
its docker CLI calls against the fake docker (tests/fakes/docker)."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest

from fakes.fake_docker import PYTORCH_IMAGE, VLLM_IMAGE, FakeDocker
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.exceptions import ConfigError
from llenergymeasure.study import docker as dk


def _cfg(**kw: object) -> ExperimentConfig:
    return ExperimentConfig(model="tiny-llama", **kw)  # type: ignore[arg-type]


# ---- GPU routing -----------------------------------------------------------------------------
def test_cpu_experiments_get_no_gpus() -> None:
    assert dk.route_gpus(_cfg(device="cpu"), "0,1", host_gpu_count=2) == dk.GpuRouting()


def test_auto_routes_all_gpus_only_when_the_host_has_some() -> None:
    assert dk.route_gpus(_cfg(), None, host_gpu_count=0) == dk.GpuRouting()
    assert dk.route_gpus(_cfg(), None, host_gpu_count=2) == dk.GpuRouting(gpus_flag="all")


def test_cuda_visible_devices_of_the_host_are_what_is_routed() -> None:
    routing = dk.route_gpus(_cfg(device="cuda"), "2,3", host_gpu_count=4)
    assert routing.gpus_flag == '"device=2,3"' and routing.devices == ["2", "3"]
    assert routing.visible == "0,1" and routing.ordinals is None
    assert dk.route_gpus(_cfg(device="cuda"), "", host_gpu_count=4) == dk.GpuRouting()


def test_explicit_gpus_are_routed_and_renumbered_inside() -> None:
    routing = dk.route_gpus(_cfg(gpus=[3, 1]), None, host_gpu_count=4)
    assert routing.gpus_flag == '"device=3,1"' and routing.visible == "0,1"
    assert routing.ordinals == [1, 0]  # the runtime numbers them in host order
    through = dk.route_gpus(_cfg(gpus=[1]), "GPU-aaa,GPU-bbb", host_gpu_count=4)
    assert through.devices == ["GPU-bbb"] and through.ordinals == [0]


def test_a_gpu_the_host_does_not_show_llem_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=0,1"):
        dk.route_gpus(_cfg(gpus=[2]), "0,1", host_gpu_count=4)


# ---- the command line ------------------------------------------------------------------------
def test_docker_run_argv_is_exact() -> None:
    run = dk.DockerRun(
        image="llem-vllm:1",
        name="llem-x-1234abcd",
        mounts=(
            dk.Mount(Path("/r/run"), "/llem/run"),
            dk.Mount(Path("/d.jsonl"), "/d.jsonl", True),
        ),
        env=(("CUDA_VISIBLE_DEVICES", "0,1"), ("HOME", "/tmp")),
        env_file=Path("/tmp/llem-env-1.list"),
        labels=(("llem.position", "3"),),
        gpus='"device=2,3"',
        user="1000:1000",
        workdir="/work",
        command=dk.entrypoint_command(),
    )
    assert dk.docker_run_argv(run) == [
        "docker", "run", "--rm", "--name", "llem-x-1234abcd", "--pull", "never", "--init",
        "--ipc", "host", "--label", "llem.position=3", "--user", "1000:1000",
        "--gpus", '"device=2,3"', "-e", "CUDA_VISIBLE_DEVICES=0,1", "-e", "HOME=/tmp",
        "--env-file", "/tmp/llem-env-1.list", "-v", "/r/run:/llem/run",
        "-v", "/d.jsonl:/d.jsonl:ro", "-w", "/work", "--entrypoint", "python3", "llem-vllm:1",
        "-m", "llenergymeasure.entrypoints.container",
        "--exchange", "/llem/exchange", "--run-dir", "/llem/run",
    ]  # fmt: skip


def test_a_secret_can_never_go_on_the_command_line() -> None:
    run = dk.DockerRun(image="i", name="n", env=(("HF_TOKEN", "hf_x"),))
    with pytest.raises(ValueError, match="env-file"):
        dk.docker_run_argv(run)


def test_container_env_passes_offline_settings_but_not_secrets() -> None:
    environ = {"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_secret", "OTHER": "x"}
    env = dict(dk.container_env(dk.GpuRouting(), environ))
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == "/llem/hf-cache"
    assert "HF_TOKEN" not in env and "OTHER" not in env and "CUDA_VISIBLE_DEVICES" not in env


def test_env_file_is_0600_outside_the_results_and_removed() -> None:
    path = dk.write_env_file(dk.secrets_from({"HF_TOKEN": "hf_abc", "PATH": "/bin"}))
    assert path is not None
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.parent == Path(tempfile.gettempdir())
        assert path.read_text() == "HF_TOKEN=hf_abc\n"
    finally:
        dk.remove_env_file(path)
    assert not path.exists()
    assert dk.write_env_file({}) is None


def test_container_name_is_stable_per_run_dir_and_valid(tmp_path: Path) -> None:
    a, b = tmp_path / "s1" / "exp_20261201-120000", tmp_path / "s2" / "exp_20261201-120000"
    name = dk.container_name(a)
    assert name == dk.container_name(a) and name != dk.container_name(b)
    assert name.startswith("llem-exp_20261201-120000-") and len(name.rsplit("-", 1)[1]) == 8


def test_input_files_are_mounted_at_their_own_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "prompts.jsonl").write_text('{"text": "hi"}\n')
    monkeypatch.chdir(tmp_path)
    mounts, workdir = dk.input_mounts(_cfg(dataset="prompts.jsonl"), tmp_path)
    target = str(tmp_path / "prompts.jsonl")
    assert mounts == (dk.Mount(Path(target).resolve(), target, read_only=True),)
    assert workdir == str(tmp_path)  # the relative name resolves the same inside
    assert dk.input_mounts(_cfg(dataset="builtin"), tmp_path) == ((), None)


def test_a_path_docker_cannot_mount_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be mounted"):
        dk.Mount(Path("/data/a:b"), "/x").flag()


# ---- the docker CLI, through the fake --------------------------------------------------------
def test_preflight_passes_and_keeps_the_image_digests(fake_docker: FakeDocker) -> None:
    check = dk.docker_preflight({"pytorch": PYTORCH_IMAGE}, needs_gpu=False)
    assert check.problems == [] and check.info.server_version == "99.0.0-fake"
    info = check.images[PYTORCH_IMAGE]
    assert info is not None and info.id.startswith("sha256:") and info.repo_digests


def test_preflight_reports_runtime_and_images_together_with_fixes(
    fake_docker: FakeDocker,
) -> None:
    fake_docker.set_images(PYTORCH_IMAGE)
    check = dk.docker_preflight({"pytorch": PYTORCH_IMAGE, "vllm": "llem-vllm:x"}, True)
    assert len(check.problems) == 2
    runtime, image = check.problems
    assert "NVIDIA container runtime" in runtime and "nvidia-ctk runtime configure" in runtime
    assert "'llem-vllm:x' (runners.vllm) is not present" in image
    assert "docker build -f docker/vllm.Dockerfile -t llem-vllm:x ." in image
    fake_docker.set_runtimes("runc", "nvidia")
    assert dk.docker_preflight({"pytorch": PYTORCH_IMAGE}, True).problems == []


def test_preflight_without_a_daemon_says_how_to_start_it(fake_docker: FakeDocker) -> None:
    fake_docker.daemon_down()
    check = dk.docker_preflight({"vllm": VLLM_IMAGE}, needs_gpu=True)
    assert not check.info.reachable
    daemon, images = check.problems
    assert "not reachable (Cannot connect to the Docker daemon" in daemon
    assert "systemctl start docker" in daemon and "usermod -aG docker" in daemon
    assert "not checked" in images


def test_preflight_without_docker_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    [problem, _] = dk.docker_preflight({"vllm": "img"}, needs_gpu=False).problems
    assert "Docker is not installed" in problem and "runners to local" in problem


def test_stop_and_remove_tolerate_a_container_already_gone(fake_docker: FakeDocker) -> None:
    notes = dk.stop_and_remove("llem-gone", grace_s=1)
    assert fake_docker.calls() == [
        ["docker", "stop", "--time", "1", "llem-gone"],
        ["docker", "rm", "-f", "llem-gone"],
    ]
    assert all("No such container" in n for n in notes)
