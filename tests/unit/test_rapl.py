"""RAPL meter against real files written under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.core.energy import rapl as rapl_mod
from llenergymeasure.core.energy.rapl import RaplMeter, delta_uj, discover_zones
from llenergymeasure.testing import ManualClock

RANGE_UJ = 262_143_328_850


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = RANGE_UJ) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{energy_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return z


def _set(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def two_socket(tmp_path: Path) -> dict[str, Path]:
    """Two packages with core/uncore/dram subzones, plus psys (which covers everything)."""
    z = {
        "pkg0": _zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000),
        "core0": _zone(tmp_path / "intel-rapl:0", "intel-rapl:0:0", "core", 500_000),
        "dram0": _zone(tmp_path / "intel-rapl:0", "intel-rapl:0:1", "dram", 100_000),
        "pkg1": _zone(tmp_path, "intel-rapl:1", "package-1", 2_000_000),
        "dram1": _zone(tmp_path / "intel-rapl:1", "intel-rapl:1:0", "dram", 200_000),
        "psys": _zone(tmp_path, "intel-rapl:2", "psys", 9_000_000),
    }
    _zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)  # MMIO mirror of package 0: ignored
    return z


def test_discovers_packages_and_dram_only(tmp_path: Path, two_socket: dict[str, Path]) -> None:
    zones = discover_zones(tmp_path)
    assert [(z.key, z.scope) for z in zones] == [
        ("cpu:package-0", "cpu_package"),
        ("dram:0", "dram"),
        ("cpu:package-1", "cpu_package"),
        ("dram:1", "dram"),
    ]


def test_sums_packages_never_psys_or_core(tmp_path: Path, two_socket: dict[str, Path]) -> None:
    clock = ManualClock()
    meter = RaplMeter(tmp_path, clock=clock.now)
    meter.start()
    assert meter.available()
    meter.begin_window("w")
    _set(two_socket["pkg0"], 1_000_000 + 30_000_000)  # +30 J
    _set(two_socket["pkg1"], 2_000_000 + 20_000_000)  # +20 J
    _set(two_socket["core0"], 500_000 + 25_000_000)  # inside package 0: not added
    _set(two_socket["psys"], 9_000_000 + 90_000_000)  # covers all: not added
    _set(two_socket["dram0"], 100_000 + 4_000_000)
    _set(two_socket["dram1"], 200_000 + 6_000_000)
    clock.advance(10.0)
    reading = meter.end_window("w")
    by_scope = {m.scope: m for m in reading.measurements}
    assert by_scope["cpu_package"].energy_j == pytest.approx(50.0)
    assert by_scope["cpu_package"].energy_j_by_device == pytest.approx(
        {"cpu:package-0": 30.0, "cpu:package-1": 20.0}
    )
    assert by_scope["dram"].energy_j == pytest.approx(10.0)
    assert (
        by_scope["cpu_package"].method == "counter" and by_scope["cpu_package"].duration_s == 10.0
    )
    assert reading.not_measured == [] and reading.flags == []


def test_wrap_around_uses_max_energy_range(tmp_path: Path) -> None:
    pkg = _zone(tmp_path, "intel-rapl:0", "package-0", 999_000_000, max_uj=1_000_000_000)
    meter = RaplMeter(tmp_path)
    meter.start()
    meter.begin_window("w")
    _set(pkg, 4_000_000)  # wrapped: 1 J before the wrap + 4 J after
    reading = meter.end_window("w")
    assert reading.measurements[0].energy_j == pytest.approx(5.0)
    assert delta_uj(10, 30, 100) == 20 and delta_uj(90, 5, 100) == 15


def test_window_longer_than_a_wrap_is_flagged(tmp_path: Path) -> None:
    _zone(tmp_path, "intel-rapl:0", "package-0", 0, max_uj=400_000_000)  # 400 J: 1 s at 400 W
    clock = ManualClock()
    meter = RaplMeter(tmp_path, clock=clock.now)
    meter.start()
    meter.begin_window("w")
    clock.advance(2.0)
    assert [f.code for f in meter.end_window("w").flags] == ["rapl_multiple_wraps"]


def test_no_dram_zone_is_not_measured_with_reason(tmp_path: Path) -> None:
    _zone(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = RaplMeter(tmp_path)
    meter.start()
    meter.begin_window("w")
    reading = meter.end_window("w")
    assert [m.scope for m in reading.measurements] == ["cpu_package"]
    assert [(n.scope, "DRAM" in n.reason) for n in reading.not_measured] == [("dram", True)]


def test_missing_powercap_is_unavailable(tmp_path: Path) -> None:
    meter = RaplMeter(tmp_path / "absent")
    meter.start()
    assert not meter.available() and "no RAPL package zones" in (meter.reason or "")
    meter.begin_window("w")
    reading = meter.end_window("w")
    assert reading.measurements == [] and {n.scope for n in reading.not_measured} == {
        "cpu_package",
        "dram",
    }


def test_permission_denied_is_not_measured_with_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _zone(tmp_path, "intel-rapl:0", "package-0", 0)
    real = rapl_mod._read_int

    def root_only(path: Path) -> int:  # tests run as root here, so chmod cannot deny reads
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl_mod, "_read_int", root_only)
    meter = RaplMeter(tmp_path)
    meter.start()
    assert not meter.available()
    assert "permission denied" in (meter.reason or "") and "chmod" in (meter.reason or "")
    meter.begin_window("w")
    reading = meter.end_window("w")
    assert reading.measurements == []
    assert all("permission denied" in n.reason for n in reading.not_measured)
