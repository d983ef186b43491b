"""collect_environment() with and without (fake) GPUs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llenergymeasure.core.environment import (
    collect_environment,
    cpu_model,
    detect_container,
    framework_env,
    library_versions,
)
from llenergymeasure.domain.environment import EnvironmentSnapshot
from llenergymeasure.testing import NVML_ERROR_LIBRARY_NOT_FOUND, FakeDevice, FakeNVML, fake_gpus


def test_without_nvml_no_gpus_and_a_reason() -> None:
    with FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND).installed():
        env = collect_environment()
    assert env.gpus == [] and env.gpu_count == 0 and not env.nvml_available
    assert env.nvml_error is not None and "NVML" in env.nvml_error
    assert env.python_version.count(".") == 2 and env.cpu_logical_cores and env.ram_total_gb
    assert env.library_versions["pydantic"] is not None


@pytest.mark.parametrize(("cvd", "expected"), [(None, [0, 1, 2, 3]), ("1,3", [1, 3]), ("", [])])
def test_fake_gpus_respect_visibility(
    cvd: str | None, expected: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    if cvd is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
    devices = [
        *fake_gpus(3),
        FakeDevice("GPU-mig", mig_enabled=True, persistence_mode=False, counter_supported=False),
    ]
    with FakeNVML(devices, cuda_driver_version=12040).installed():
        env = collect_environment()
    assert [g.nvml_index for g in env.gpus] == expected
    assert env.cuda_driver_version == "12.4" and env.driver_version == "580.159.04"
    assert env.cuda_visible_devices == cvd
    if 3 in expected:
        mig = env.gpus[-1]
        assert (
            mig.mig_enabled
            and mig.persistence_mode is False
            and mig.energy_counter_supported is False
        )
        assert mig.power_limit_w == 700.0 and mig.memory_total_mb == pytest.approx(81559.0)
    assert EnvironmentSnapshot.model_validate_json(env.model_dump_json()) == env


def test_does_not_import_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    with FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND).installed():
        env = collect_environment()
    assert "torch" not in sys.modules and env.torch_cuda_version is None


def test_container_detection(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/system.slice/docker-abc.scope\n")
    assert detect_container(tmp_path / "nope", cgroup) == (True, f"{cgroup} mentions docker")
    cgroup.write_text("0::/init.scope\n")
    assert detect_container(tmp_path / "nope", cgroup) == (False, None)
    (tmp_path / ".dockerenv").touch()
    assert detect_container(tmp_path / ".dockerenv", cgroup)[0]


def test_cpu_model_and_versions(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n")
    assert cpu_model(info) == "Intel(R) Xeon(R) Platinum 8480+"
    versions = library_versions(("pydantic", "surely-not-installed-pkg"))
    assert versions["pydantic"] and versions["surely-not-installed-pkg"] is None


def test_framework_settings_recorded_credentials_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {
        "TORCH_CUDNN_SDPA_AVOID_RECOMPILE": "1",
        "CUDA_MODULE_LOADING": "LAZY",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "VLLM_USE_FLASHINFER_SAMPLER": "0",
        "OMP_NUM_THREADS": "4",
        "VLLM_API_KEY": "s3cret",
        "CUDA_VISIBLE_DEVICES": "0",
        "HOME": "/root",
    }
    assert framework_env(environ) == {
        "CUDA_MODULE_LOADING": "LAZY",
        "OMP_NUM_THREADS": "4",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "TORCH_CUDNN_SDPA_AVOID_RECOMPILE": "1",
        "VLLM_USE_FLASHINFER_SAMPLER": "0",
    }
    monkeypatch.setenv("TORCH_CUDNN_SDPA_AVOID_RECOMPILE", "1")
    with FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND).installed():
        env = collect_environment()
    assert env.framework_env["TORCH_CUDNN_SDPA_AVOID_RECOMPILE"] == "1"
