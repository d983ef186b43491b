"""`llem config`, `llem config --schema` and `llem --version`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from llenergymeasure import __version__
from llenergymeasure.cli.app import app
from llenergymeasure.cli.commands import config as config_cmd
from llenergymeasure.config import ssot
from llenergymeasure.config.user_config import UserConfig

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"llem (llenergymeasure) {__version__}"


def test_no_arguments_prints_help() -> None:
    result = runner.invoke(app, [])
    assert "run" in result.output and "config" in result.output


def test_schema_is_json_with_experiment_config_properties() -> None:
    result = runner.invoke(app, ["config", "--schema"])
    assert result.exit_code == 0, result.stderr
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    for field in ("model", "backend", "precision", "max_output_tokens", "batch_size"):
        assert f'"{field}"' in text, field


def test_config_reports_gpus_backends_meters_and_user_config() -> None:
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "GPUs" in out
    for backend in ssot.BACKENDS:
        assert backend in out
    for meter in ("nvml", "rapl", "zeus", "codecarbon", "estimate"):
        assert meter in out
    assert "User config:" in out and "config.yaml" in out
    assert "output.results_dir" in out and "[default]" in out


def test_config_shows_user_config_sources(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLEM_RESULTS_DIR", str(tmp_path / "elsewhere"))
    out = runner.invoke(app, ["config"]).stdout
    line = next(ln for ln in out.splitlines() if "output.results_dir" in ln)
    assert "elsewhere" in line and "[env]" in line


def test_missing_backends_name_their_pip_command(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from llenergymeasure.core.backends import registry

    def fake(name: str) -> tuple[bool, str]:
        return (
            name == "pytorch",
            "installed" if name == "pytorch" else f"x: {ssot.BACKEND_EXTRAS[name]}",
        )

    monkeypatch.setattr(registry, "is_backend_available", fake)
    text = config_cmd.backend_section()
    assert 'pip install "llenergymeasure[vllm]"' in text
    assert 'pip install "llenergymeasure[tensorrt]"' in text


def test_without_a_gpu_the_report_says_why() -> None:
    text = config_cmd.gpu_section(_env(gpus=[], nvml_error="NVML Shared Library Not Found"))
    assert "no NVIDIA GPU visible: NVML Shared Library Not Found" in text


def test_gpu_section_lists_name_vram_driver_cuda() -> None:
    from llenergymeasure.domain.environment import GpuInfo

    gpu = GpuInfo(nvml_index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-1", memory_total_mb=81559.0)
    text = config_cmd.gpu_section(
        _env(gpus=[gpu], driver_version="550.54", cuda_driver_version="12.4")
    )
    assert "[0] NVIDIA H100 80GB HBM3, 81.6 GB" in text
    assert "driver 550.54, CUDA (driver) 12.4" in text


def _env(**fields):  # type: ignore[no-untyped-def]
    from llenergymeasure.domain.environment import EnvironmentSnapshot

    base = {"collected_at_unix_s": 0.0, "os": "Linux", "python_version": "3.11"}
    return EnvironmentSnapshot(**{**base, **fields})


def test_runners_section_shows_each_backend_and_its_image(fake_docker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fakes.fake_docker import VLLM_IMAGE

    monkeypatch.setenv("LLEM_RUNNERS__VLLM", f"docker:{VLLM_IMAGE}")
    monkeypatch.setenv("LLEM_RUNNERS__TENSORRT", "docker:llem-trt:missing")
    out = runner.invoke(app, ["config"]).stdout
    lines = {ln.split()[0]: ln for ln in out.split("Runners", 1)[1].splitlines()[1:5]}
    assert lines["pytorch"].split() == ["pytorch", "local"]
    assert f"docker:{VLLM_IMAGE}  image present (sha256:" in lines["vllm"]
    assert (
        "image not present -> build it from this checkout: docker build -f "
        "docker/tensorrt.Dockerfile -t llem-trt:missing ." in lines["tensorrt"]
    )
    assert "reachable (server 99.0.0-fake), NVIDIA runtime: no -> install" in lines["docker"]


def test_runners_section_when_docker_is_down_and_when_unused(fake_docker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fake_docker.daemon_down()
    uc = UserConfig(runners={"vllm": "docker:img"})
    text = config_cmd.runner_section(uc)
    assert "docker:img  (image not checked: Docker is not reachable)" in text
    assert "systemctl start docker" in text
    calls = len(fake_docker.calls())
    assert "docker " not in config_cmd.runner_section(UserConfig())  # all local
    assert len(fake_docker.calls()) == calls  # ... and Docker was not asked
