"""Late aggregation of per-process raw results into one ExperimentResult."""

from __future__ import annotations

from pathlib import Path

import pytest
from results_factory import gpu_report, raw, timing

from llenergymeasure.core.energy.quality import merge_flags_by_code, short_window_flags
from llenergymeasure.domain.energy import EnergyMeasurement, QualityFlag
from llenergymeasure.exceptions import ExperimentError
from llenergymeasure.results.aggregation import (
    aggregate_process_results,
    aggregate_run_dir,
    merge_energy_reports,
)
from llenergymeasure.results.persistence import read_result, write_process_result


def _two_processes():  # type: ignore[no-untyped-def]
    p0 = raw(
        0,
        2,
        [timing(1.0, [0.1, 0.01, 0.01, 0.01]), timing(5.0, [0.2, 0.05])],
        gpu_report({"gpu:0": 100.0}, 10.0),
        window=(100.0, 110.0),
    )
    p1 = raw(
        1,
        2,
        [timing(7.0, [0.3, 0.04, 0.04], n_in=20)],
        gpu_report({"gpu:1": 60.0}, 11.0),
        window=(101.0, 112.0),
    )
    return p0, p1


def test_pools_timings_and_sums_energy_over_gpus() -> None:
    p0, p1 = _two_processes()
    result = aggregate_process_results([p1, p0])  # order of arrival must not matter
    m = result.metrics
    assert m is not None
    assert m.tokens.output_tokens == 9 and m.tokens.input_tokens == 40
    assert m.tokens.n_requests == 3
    assert result.measurement_window_s == pytest.approx(12.0)  # earliest start -> latest end
    assert m.throughput.output_tokens_per_s == pytest.approx(9 / 12.0)
    assert result.energy is not None
    assert result.energy.gpu_energy_j == pytest.approx(160.0)
    assert result.energy.measurements[0].energy_j_by_device == {"gpu:0": 100.0, "gpu:1": 60.0}
    assert result.j_per_output_token == pytest.approx(160.0 / 9)
    # ITL pooled over all gaps (10,10,10,50,40,40 ms), not a mean of per-process means (30)
    assert result.itl_ms_mean == pytest.approx(160.0 / 6)
    assert result.ttft_ms_mean == pytest.approx(200.0)
    assert result.n_processes == 2
    assert result.energy_not_measured_reason is None


def test_single_process_energy_report_is_passed_through() -> None:
    p0, _ = _two_processes()
    single = raw(0, 1, p0.timings, p0.energy)
    result = aggregate_process_results([single])
    assert result.energy == p0.energy
    assert result.measurement_window_s == pytest.approx(10.0)


def test_device_seen_by_two_processes_is_counted_once_and_flagged() -> None:
    def cpu_report(joules: float):  # type: ignore[no-untyped-def]
        report = gpu_report({"gpu:0": 10.0}, 5.0)
        cpu = EnergyMeasurement.from_devices(
            meter="rapl",
            window="measure",
            scope="cpu_package",
            method="counter",
            energy_j_by_device={"cpu:package-0": joules},
            duration_s=5.0,
        )
        return report.model_copy(update={"measurements": [*report.measurements, cpu]})

    merged = merge_energy_reports([cpu_report(30.0), cpu_report(35.0)], 5.0)
    assert merged is not None
    assert merged.cpu_energy_j == pytest.approx(35.0)  # largest reading, once
    assert merged.gpu_energy_j == pytest.approx(10.0)  # same gpu:0 key in both: once too
    assert any(w.code == "device_measured_twice" for w in merged.warnings)


def test_foreign_repeated_or_no_process_results_are_refused() -> None:
    p0, p1 = _two_processes()
    other = p1.model_copy(update={"experiment_id": "other"})
    with pytest.raises(ExperimentError, match="different experiments"):
        aggregate_process_results([p0, other])
    with pytest.raises(ExperimentError, match="repeated"):
        aggregate_process_results([p0, p0])
    with pytest.raises(ExperimentError, match="do not fit"):
        aggregate_process_results([p0, p1.model_copy(update={"process_index": 2})])
    with pytest.raises(ExperimentError, match="no process completed"):
        aggregate_process_results([])


def test_energy_not_measured_is_none_with_reason_never_zero() -> None:
    p0, _ = _two_processes()
    single = raw(0, 1, p0.timings, None, energy_not_measured_reason="no meter on this host")
    result = aggregate_process_results([single])
    assert result.energy is None and result.energy_j is None
    assert result.j_per_output_token is None
    assert result.energy_not_measured_reason == "no meter on this host"
    assert any(w.code == "energy_not_measured" for w in result.warnings)
    assert any(w.code == "low_request_count" for w in result.warnings)


def test_raw_results_on_disk_aggregate_into_result_json(tmp_path: Path) -> None:
    p0, p1 = _two_processes()
    for p in (p1, p0):
        write_process_result(p, tmp_path)
    assert sorted(q.name for q in (tmp_path / "raw").iterdir()) == [
        "process_0.done",
        "process_0.json",
        "process_1.done",
        "process_1.json",
    ]
    with pytest.raises(FileExistsError):
        write_process_result(p0, tmp_path)
    result, path = aggregate_run_dir(tmp_path)
    assert path == tmp_path / "result.json" and read_result(path) == result
    assert result.process_results == ["raw/process_0.json", "raw/process_1.json"]
    assert result.energy is not None and result.energy.gpu_energy_j == pytest.approx(160.0)


def test_one_flag_per_code_energy_layer_short_window_kept() -> None:
    """A 3.3 s GPU window: the energy layer's short_window stands, no orchestrator twin."""
    report = gpu_report({"gpu:0": 100.0}, 3.3)
    report.warnings = short_window_flags(3.3, [0.02])  # info: < 10 s recommended length
    notes = [
        QualityFlag(code="backend_note", message="a", severity="info"),
        QualityFlag(code="backend_note", message="b", severity="info"),
        QualityFlag(code="backend_note", message="a", severity="info"),
    ]
    result = aggregate_process_results(
        [raw(0, 1, [timing(1.0, [0.1])], report, window=(100.0, 103.3), warnings=notes)]
    )
    codes = [w.code for w in result.warnings]
    assert len(codes) == len(set(codes)), codes
    short = [w for w in result.warnings if w.code == "short_window"]
    assert short[0].message.startswith("Window 3.30 s < 10 s: GPU power sensors")
    assert [w.message for w in result.warnings if w.code == "backend_note"] == ["a; b"]


def test_two_processes_short_windows_merge_to_the_most_severe() -> None:
    p0, p1 = _two_processes()
    assert p0.energy is not None and p1.energy is not None
    p0.energy.warnings = short_window_flags(1.0, [0.2])  # warning: < 10 counter periods
    p1.energy.warnings = short_window_flags(0.1, [0.2])  # critical: shorter than one period
    result = aggregate_process_results([p0, p1])
    short = [w for w in result.warnings if w.code == "short_window"]
    assert [w.severity for w in short] == ["critical"]


def test_merge_flags_by_code_keeps_first_of_equal_severity() -> None:
    flags = [
        QualityFlag(code="short_window", message="energy layer", severity="info"),
        QualityFlag(code="low_request_count", message="few"),
        QualityFlag(code="short_window", message="orchestrator", severity="info"),
    ]
    merged = merge_flags_by_code(flags)
    assert [(f.code, f.message) for f in merged] == [
        ("short_window", "energy layer"),
        ("low_request_count", "few"),
    ]
