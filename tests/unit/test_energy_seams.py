"""The energy layer's typed seams: what meters declare, the NVML adapter's installed library,
the edges a meter reports, and flag de-duplication."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pynvml
import pytest

from llenergymeasure.core.energy import EnergySession
from llenergymeasure.core.energy._nvml import Nvml, nvml
from llenergymeasure.core.energy.codecarbon import CodeCarbonMeter
from llenergymeasure.core.energy.estimate import EstimateMeter
from llenergymeasure.core.energy.null import NullMeter
from llenergymeasure.core.energy.nvml import GpuDevice, NvmlMeter
from llenergymeasure.core.energy.protocol import EnergyMeter
from llenergymeasure.core.energy.quality import drop_repeated_flags, merge_flags_by_code
from llenergymeasure.core.energy.rapl import RaplMeter
from llenergymeasure.core.energy.zeus import ZeusMeter
from llenergymeasure.domain.energy import QualityFlag
from llenergymeasure.testing import FakeDevice, FakeNVML, ManualClock, fake_gpus

NO_RAPL = Path("/nonexistent-powercap")
GPU = GpuDevice(0, "GPU-fake-0", "Fake GPU")


def test_drop_repeated_flags_keeps_distinct_messages_of_one_code() -> None:
    flags = [
        QualityFlag(code="mig", message="gpu:0"),
        QualityFlag(code="short_window", message="short"),
        QualityFlag(code="mig", message="gpu:1"),
        QualityFlag(code="mig", message="gpu:0", severity="critical"),  # same code and message
    ]
    kept = drop_repeated_flags(flags)
    assert [(f.code, f.message, f.severity) for f in kept] == [
        ("mig", "gpu:0", "warning"),
        ("short_window", "short", "warning"),
        ("mig", "gpu:1", "warning"),
    ]
    assert len(merge_flags_by_code(flags)) == 2  # the other policy: one flag per code


def test_adapter_offers_an_explicitly_installed_library_and_none_for_pynvml() -> None:
    adapter = Nvml()
    fake = FakeNVML(fake_gpus(1))
    assert adapter.installed_lib() is None and adapter.lib is pynvml
    with adapter.using(fake):
        assert adapter.installed_lib() is fake and adapter.lib is fake
    assert adapter.installed_lib() is None and adapter.lib is pynvml
    adapter.lib = fake
    assert adapter.installed_lib() is fake
    adapter.lib = pynvml  # pynvml installed by hand is still pynvml: nothing to pass on
    assert adapter.installed_lib() is None
    adapter.lib = None
    assert adapter.installed_lib() is None and adapter.lib is pynvml


def test_fake_installed_is_offered_by_the_shared_adapter() -> None:
    fake = FakeNVML(fake_gpus(2))
    with fake.installed():
        assert nvml.installed_lib() is fake
    assert nvml.installed_lib() is None


def test_session_sampler_process_reads_the_installed_library() -> None:
    fake = FakeNVML(fake_gpus(1, power_w=100.0))  # real clock: parent and child agree
    session = EnergySession(
        "nvml", sample_interval_ms=20.0, rapl_root=Path("/nonexistent-powercap"), environ={}
    )
    with fake.installed(), session:
        assert session.sampler is not None and session.sampler.running
        session.begin_window("m")
        time.sleep(0.3)
        report = session.end_window("m")
    assert report.thermal is not None and report.thermal.sample_count > 0
    assert report.polled_gpu_energy_j_by_device["gpu:0"] > 0


@pytest.mark.parametrize(
    ("meter", "scopes", "per_device"),
    [
        (NvmlMeter([GPU]), ("gpu",), True),
        (ZeusMeter([GPU], [0]), ("gpu",), True),
        (CodeCarbonMeter([0]), ("gpu", "cpu_package", "dram"), False),
        (RaplMeter(NO_RAPL), ("cpu_package", "dram"), True),
        (EstimateMeter(tdp_w=100.0), ("cpu_package",), False),
        (NullMeter("nothing here", ("gpu", "dram")), (), False),
    ],
)
def test_every_meter_declares_what_it_measures(
    meter: EnergyMeter, scopes: tuple[str, ...], per_device: bool
) -> None:
    assert isinstance(meter, EnergyMeter)
    assert meter.scopes == scopes and meter.per_device is per_device


def test_null_meter_reports_its_given_scopes_as_not_measured() -> None:
    meter = NullMeter("nothing here", ("gpu", "dram"))
    meter.begin_window("w")
    reading = meter.end_window("w")
    assert [nm.scope for nm in reading.not_measured] == ["gpu", "dram"]


def test_nvml_meter_reading_carries_its_edges() -> None:
    clock = ManualClock()
    fake = FakeNVML(fake_gpus(1, power_w=100.0), clock=clock.now)
    meter = NvmlMeter([GPU], clock=clock.now, sleep=clock.sleep, probe_budget_s=0.0)
    with fake.installed():
        meter.start()
        t0 = clock.now()
        meter.begin_window("w")
        clock.advance(5.0)
        reading = meter.end_window("w")
    assert reading.edges_s == (t0, t0 + 5.0)
    null = NullMeter("x")
    null.begin_window("w")
    assert null.end_window("w").edges_s is None


def test_only_per_device_gaps_become_not_measured_flags() -> None:
    clock = ManualClock()
    devices = [FakeDevice("GPU-a"), FakeDevice("GPU-b", counter_supported=False)]
    session = EnergySession(
        "auto",
        rapl_root=NO_RAPL,
        sampler_enabled=False,
        environ={},
        clock=clock.now,
        sleep=clock.sleep,
    )
    with FakeNVML(devices, clock=clock.now).installed(), session:
        session.begin_window("m")
        clock.advance(12.0)
        report = session.end_window("m")
    assert set(report.not_measured) == {"gpu:1", "cpu_package", "dram"}
    flags = [f for f in report.warnings if f.code == "not_measured"]
    assert [(f.severity, f.message.startswith("gpu:1")) for f in flags] == [("warning", True)]


class _FakeTracker:
    """Stands in for codecarbon.OfflineEmissionsTracker at its API."""

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def start_task(self, name: str) -> None: ...

    def stop_task(self, name: str) -> object:
        return types.SimpleNamespace(
            duration=2.0, gpu_energy=1e-4, cpu_energy=None, ram_energy=None
        )


def test_baseline_needs_a_meter_with_gpu_energy_per_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = types.ModuleType("codecarbon")
    module.OfflineEmissionsTracker = _FakeTracker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "codecarbon", module)
    from llenergymeasure.core.energy.baseline import BaselineSettings

    clock = ManualClock()
    settings = BaselineSettings(duration_s=2.0, cache_path=tmp_path / "baseline.json")

    def baseline(backend: str) -> object:
        session = EnergySession(
            backend,
            baseline=settings,
            rapl_root=NO_RAPL,
            sampler_enabled=False,
            environ={},
            clock=clock.now,
            sleep=clock.sleep,
        )
        with FakeNVML(fake_gpus(1, power_w=80.0), clock=clock.now).installed(), session:
            return session.measure_baseline()

    assert baseline("codecarbon") is None  # one GPU total (gpu:all): no per-GPU idle power
    measured = baseline("nvml")
    assert measured is not None and measured.idle_power_w_by_device.keys() == {"gpu:0"}
