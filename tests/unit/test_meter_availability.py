"""meter_availability: what can measure on this machine, probed through the hardware seam."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llenergymeasure.core.energy.nvml import GpuDevice
from llenergymeasure.core.energy.selection import (
    _extra_availability,
    meter_availability,
    probe_gpus,
)
from llenergymeasure.testing import FakeDevice, FakeNVML, fake_gpus

NVML_NOT_FOUND = 9  # NVML_ERROR_DRIVER_NOT_LOADED


def _rapl_tree(root: Path) -> Path:
    """One readable package zone with a DRAM subzone under ``root``."""
    for zone, name in (
        (root / "intel-rapl:0", "package-0"),
        (root / "intel-rapl:0" / "intel-rapl:0:0", "dram"),
    ):
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text("1000\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


def test_gpus_with_counters_and_a_readable_rapl_tree(tmp_path: Path) -> None:
    with FakeNVML(fake_gpus(2)).installed():
        meters = meter_availability(rapl_root=_rapl_tree(tmp_path / "powercap"), environ={})
    assert list(meters) == ["nvml", "rapl", "zeus", "codecarbon", "estimate"]
    assert meters["nvml"] == (True, "2 GPU(s), energy counter read at window edges")
    assert meters["rapl"] == (True, "CPU package/DRAM counters readable")
    assert meters["estimate"][0] is True


def test_a_gpu_without_counter_is_named_and_no_rapl_says_why(tmp_path: Path) -> None:
    devices = [FakeDevice("GPU-a"), FakeDevice("GPU-b", counter_supported=False)]
    with FakeNVML(devices).installed():
        meters = meter_availability(rapl_root=tmp_path, environ={})
    ok, why = meters["nvml"]
    assert ok and "no energy counter on gpu:1" in why and "gpu:0" not in why
    assert meters["rapl"] == (False, f"no RAPL package zones under {tmp_path}")


def test_no_driver_makes_every_gpu_meter_unavailable(tmp_path: Path) -> None:
    with FakeNVML([], init_error=NVML_NOT_FOUND).installed():
        meters = meter_availability(rapl_root=tmp_path, environ={})
    assert meters["nvml"][0] is False and "NVML unavailable" in meters["nvml"][1]
    assert meters["zeus"][0] is False and meters["codecarbon"][0] is False


def test_optional_meters_need_the_package_and_a_gpu() -> None:
    gpu = _gpus_from_fake()
    assert _extra_availability("no_such_module_xyz", "pip install x", gpu, "none") == (
        False,
        "not installed: pip install x",
    )
    assert _extra_availability("json", "", gpu, "none") == (True, "installed")
    assert _extra_availability("json", "", [], "no GPU visible") == (
        False,
        "installed, but it measures GPUs and no GPU visible",
    )


def _gpus_from_fake() -> list[GpuDevice]:
    with FakeNVML(fake_gpus(1)).installed():
        gpus, _ = probe_gpus(environ={})
    return gpus


def test_probing_meters_imports_no_torch() -> None:
    code = (
        "import sys; from llenergymeasure.core.energy.selection import meter_availability; "
        "meter_availability(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": src}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_cpu_run_on_a_gpu_machine_says_it_ran_on_the_cpu() -> None:
    """No GPU in use because the workload ran on the CPU: say so, not 'no GPU visible'."""
    with FakeNVML(fake_gpus(2)).installed():
        gpus, why = probe_gpus([], environ={})
        all_gpus, none = probe_gpus(None, environ={})
    assert gpus == [] and why is not None and "ran on the CPU" in why
    assert len(all_gpus) == 2 and none is None
