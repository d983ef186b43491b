"""The energy layer's typed seams: what meters declare, the NVML adapter's installed library,
the edges a meter reports, and flag de-duplication."""

from __future__ import annotations

import time
from pathlib import Path

import pynvml

from llenergymeasure.core.energy import EnergySession
from llenergymeasure.core.energy._nvml import Nvml, nvml
from llenergymeasure.core.energy.quality import drop_repeated_flags, merge_flags_by_code
from llenergymeasure.domain.energy import QualityFlag
from llenergymeasure.testing import FakeNVML, fake_gpus


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
