"""Each late-aggregation rule on hand-made raw results (docs/measurement.md, section 15).

Tokens and FLOPs summed, latency pooled, the window from the earliest start to the latest
end, energy summed over distinct GPUs (a GPU two processes carry counted once), missing
processes flagged with why, windows that do not overlap flagged, breakdowns kept, and the
files on disk (markers) deciding what counts as a complete raw result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from results_factory import CONFIG, T0, gpu_report, raw, timing

from llenergymeasure.core.metrics import estimate_flops
from llenergymeasure.domain.energy import (
    BaselineAdjustment,
    EnergyMeasurement,
    EnergyReport,
    IdleBaseline,
)
from llenergymeasure.domain.results import LaunchRecord, ProcessOutcome, RawProcessResult
from llenergymeasure.results.aggregation import (
    MIN_WINDOW_OVERLAP,
    aggregate_process_results,
    aggregate_run_dir,
    build_run_result,
    merge_energy_reports,
    resolve_arch_quietly,
    restrict_energy_report,
    window_overlap,
)
from llenergymeasure.results.persistence import (
    read_raw_run,
    write_launch_record,
    write_process_result,
)


def _codes(result: object) -> dict[str, str]:
    return {w.code: w.severity for w in result.warnings}  # type: ignore[attr-defined]


def _three() -> list[RawProcessResult]:
    """Three processes, one GPU each, windows almost identical."""
    return [
        raw(
            i,
            3,
            [timing(1.0, [0.1, 0.01 * (i + 1)], n_in=10 + i), timing(2.0, [0.2, 0.02])],
            gpu_report({f"gpu:{i}": 100.0 + i}, 10.5),
            window=(100.0 + 0.01 * i, 110.0 + 0.01 * i),
            gpu_devices=[f"gpu:{i}"],
        )
        for i in range(3)
    ]


def _launch(outcomes: list[ProcessOutcome], energy: EnergyReport | None = None) -> LaunchRecord:
    return LaunchRecord(
        experiment_id="exp1",
        name="tiny",
        config=CONFIG.model_dump(mode="json"),
        config_hash=_three()[0].config_hash,
        started_at=T0,
        ended_at=T0,
        energy=energy,
        n_processes=len(outcomes),
        processes=outcomes,
        setup_s=4.5,
        phase_durations_s={"load": 4.0, "measure": 10.6},
        llem_version="9.9",
    )


def test_tokens_and_flops_are_sums_and_latency_is_pooled() -> None:
    raws = _three()
    result = aggregate_process_results(raws)
    m = result.metrics
    assert m is not None and m.flops is not None
    assert m.tokens.n_requests == 6
    assert m.tokens.input_tokens == sum(10 + i + 10 for i in range(3))
    assert m.tokens.output_tokens == 12
    arch = resolve_arch_quietly(CONFIG.model)
    assert arch is not None
    per_process = [
        estimate_flops(
            arch, [t.input_tokens for t in r.timings], [t.output_tokens for t in r.timings]
        ).total_flops
        for r in raws
    ]
    assert m.flops.total_flops == sum(per_process)
    # 6 TTFT samples pooled: 100,100,100 ms and 200,200,200 ms -> p50 150, not a mean of means
    assert m.latency.ttft is not None and m.latency.ttft.n_samples == 6
    assert m.latency.ttft.p50_ms == pytest.approx(150.0)
    assert result.measurement_window_s == pytest.approx(10.02)  # earliest start -> latest end
    assert not result.partial and result.n_processes == 3
    assert [p.status for p in result.process_breakdown] == ["completed"] * 3
    assert result.process_breakdown[2].gpu_devices == ["gpu:2"]
    assert result.process_breakdown[1].output_tokens_per_s == pytest.approx(4 / 10.0)


def test_energy_summed_over_distinct_gpus_and_kept_per_gpu() -> None:
    result = aggregate_process_results(_three())
    assert result.energy is not None
    assert result.energy.gpu_energy_j == pytest.approx(100.0 + 101.0 + 102.0)
    assert "device_measured_twice" not in _codes(result)
    rows = {d.device: d for d in result.device_breakdown}
    assert {k: (d.energy_j, d.processes, d.counted) for k, d in rows.items()} == {
        "gpu:0": (100.0, [0], True),
        "gpu:1": (101.0, [1], True),
        "gpu:2": (102.0, [2], True),
    }


def test_a_gpu_seen_by_two_processes_is_counted_once_and_flagged() -> None:
    """Process 1 ran on gpu:0 and gpu:1 (e.g. a device map), process 0 on gpu:0: both raw
    results carry gpu:0's energy (the same reading of the parent's counter)."""
    p0 = raw(0, 2, [timing(1.0, [0.1])], gpu_report({"gpu:0": 100.0}, 10.0), gpu_devices=["gpu:0"])
    p1 = raw(
        1,
        2,
        [timing(1.0, [0.1])],
        gpu_report({"gpu:0": 100.0, "gpu:1": 60.0}, 10.0),
        gpu_devices=["gpu:0", "gpu:1"],
    )
    result = aggregate_process_results([p0, p1])
    assert result.energy is not None and result.energy.gpu_energy_j == pytest.approx(160.0)
    twice = [w for w in result.warnings if w.code == "device_measured_twice"]
    assert len(twice) == 1 and "gpu:0" in twice[0].message and "[0, 1]" in twice[0].message
    rows = {d.device: d for d in result.device_breakdown}
    assert rows["gpu:0"].processes == [0, 1] and "counted once" in (rows["gpu:0"].note or "")
    assert rows["gpu:1"].processes == [1]


def test_host_devices_are_shared_by_every_process_without_a_flag() -> None:
    def with_cpu(report: EnergyReport, joules: float) -> EnergyReport:
        cpu = EnergyMeasurement.from_devices(
            meter="rapl",
            window="measure",
            scope="cpu_package",
            method="counter",
            energy_j_by_device={"cpu:package-0": joules},
            duration_s=10.0,
        )
        return report.model_copy(
            update={"measurements": [*report.measurements, cpu], "cpu_energy_j": joules}
        )

    p0 = raw(0, 2, [timing(1.0, [0.1])], with_cpu(gpu_report({"gpu:0": 100.0}, 10.0), 50.0))
    p1 = raw(1, 2, [timing(1.0, [0.1])], with_cpu(gpu_report({"gpu:1": 60.0}, 10.0), 50.0))
    result = aggregate_process_results([p0, p1])
    assert result.energy is not None
    assert result.energy.cpu_energy_j == pytest.approx(50.0)  # once, not 100
    assert result.energy.gpu_energy_j == pytest.approx(160.0)
    assert "device_measured_twice" not in _codes(result)
    host = next(d for d in result.device_breakdown if d.device == "cpu:package-0")
    assert host.processes == [0, 1] and host.counted


def test_a_missing_process_gives_a_partial_result_that_says_which_and_why() -> None:
    p0, _, p2 = _three()
    result = aggregate_process_results([p2, p0])
    assert result.partial and result.n_processes == 3
    assert _codes(result)["processes_missing"] == "critical"
    flag = next(w for w in result.warnings if w.code == "processes_missing")
    assert "1 of 3" in flag.message and "process 1: no raw result" in flag.message
    assert [p.status for p in result.process_breakdown] == ["completed", "missing", "completed"]
    assert result.process_breakdown[1].reason == "no raw result"
    m = result.metrics
    assert m is not None and m.tokens.n_requests == 4  # the others' work only
    assert result.energy is not None and result.energy.gpu_energy_j == pytest.approx(202.0)


def test_the_launch_record_says_why_a_process_is_missing_and_keeps_its_gpu_apart() -> None:
    p0, _, p2 = _three()
    full = gpu_report({"gpu:0": 100.0, "gpu:1": 250.0, "gpu:2": 102.0}, 10.5)
    launch = _launch(
        [
            ProcessOutcome(process_index=0, status="completed", gpu_devices=["gpu:0"]),
            ProcessOutcome(
                process_index=1,
                status="crashed",
                reason="killed by signal SIGKILL (9) without reporting",
                stage="measuring",
                exit_code=-9,
                gpu_devices=["gpu:1"],
            ),
            ProcessOutcome(process_index=2, status="completed", gpu_devices=["gpu:2"]),
        ],
        energy=full,
    )
    result = aggregate_process_results([p0, p2], launch=launch)
    assert result.partial
    assert "SIGKILL" in (result.process_breakdown[1].reason or "")
    assert "(last stage: measuring)" in (result.process_breakdown[1].reason or "")
    # energy of the missing process's GPU is kept apart, never added to the others' work
    assert result.energy is not None and result.energy.gpu_energy_j == pytest.approx(202.0)
    gpu1 = next(d for d in result.device_breakdown if d.device == "gpu:1")
    assert not gpu1.counted and gpu1.energy_j == 250.0 and gpu1.processes == []
    # run-level fields come from the launching process
    assert result.setup_s == 4.5 and result.llem_version == "9.9"
    assert result.phase_durations_s["load"] == 4.0


def test_windows_that_do_not_overlap_enough_are_flagged() -> None:
    def pair(second: tuple[float, float]) -> list[RawProcessResult]:
        return [
            raw(0, 2, [timing(1.0, [0.1])], None, window=(100.0, 110.0)),
            raw(1, 2, [timing(1.0, [0.1])], None, window=second),
        ]

    aligned = pair((100.2, 110.1))
    assert window_overlap(aligned) == pytest.approx(9.8 / 10.1)
    assert "windows_not_overlapping" not in _codes(aggregate_process_results(aligned))
    apart = pair((104.0, 114.0))  # common 6 s of a 14 s union: 43 %
    overlap = window_overlap(apart)
    assert overlap is not None and overlap < MIN_WINDOW_OVERLAP
    result = aggregate_process_results(apart)
    flag = next(w for w in result.warnings if w.code == "windows_not_overlapping")
    assert "43 %" in flag.message and "90 %" in flag.message
    assert result.measurement_window_s == pytest.approx(14.0)
    assert window_overlap(pair((111.0, 112.0))) == 0.0  # disjoint


def test_monotonic_stamps_win_over_a_stepped_wall_clock() -> None:
    """NTP stepped the wall clock by 50 s between the two starts: monotonic says aligned."""
    p0 = raw(0, 2, [timing(1.0, [0.1])], None, window=(100.0, 110.0))
    p1 = raw(1, 2, [timing(1.0, [0.1])], None, window=(150.0, 160.0))
    p0 = p0.model_copy(update={"window_start_monotonic_s": 5.0, "window_end_monotonic_s": 15.0})
    p1 = p1.model_copy(update={"window_start_monotonic_s": 5.1, "window_end_monotonic_s": 15.1})
    result = aggregate_process_results([p0, p1])
    assert result.measurement_window_s == pytest.approx(10.1)
    assert "windows_not_overlapping" not in _codes(result)


def test_parts_of_one_report_merge_back_to_it() -> None:
    """The parent's report split per process (restrict) and merged again gives the same
    figures, idle split included; a GPU in two parts is counted once."""
    baseline = IdleBaseline(
        key="GPU-a,GPU-b|context",
        idle_power_w=150.0,
        idle_power_w_by_device={"gpu:0": 100.0, "gpu:1": 50.0},
        duration_s=5.0,
        method="counter",
        measured_at_unix_s=0.0,
    )
    full = gpu_report({"gpu:0": 3000.0, "gpu:1": 2000.0}, 10.0)
    full = full.model_copy(
        update={
            "baseline": BaselineAdjustment(
                baseline=baseline,
                idle_power_w=150.0,
                gross_energy_j=5000.0,
                idle_energy_j=1500.0,
                energy_above_idle_j=3500.0,
            ),
            "polled_gpu_energy_j": 5100.0,
            "polled_gpu_energy_j_by_device": {"gpu:0": 3060.0, "gpu:1": 2040.0},
            "counter_vs_polled_pct": 2.0,
        }
    )
    part0 = restrict_energy_report(full, ["gpu:0"])
    part1 = restrict_energy_report(full, ["gpu:0", "gpu:1"])
    assert part0.gpu_energy_j == 3000.0 and part0.polled_gpu_energy_j == 3060.0
    assert part0.counter_vs_polled_pct == pytest.approx(2.0)
    assert part0.baseline is not None and part0.baseline.idle_power_w == 100.0
    assert part0.baseline.energy_above_idle_j == pytest.approx(3000.0 - 1000.0)
    merged = merge_energy_reports([part0, part1], 9.9, owners=[0, 1])
    assert merged is not None
    assert merged.gpu_energy_j == full.gpu_energy_j
    assert merged.duration_s == full.duration_s  # the energy window, not the inference one
    assert merged.polled_gpu_energy_j == pytest.approx(5100.0)
    assert merged.baseline is not None
    assert merged.baseline.idle_power_w == 150.0  # gpu:0's idle once, not twice
    assert merged.baseline.energy_above_idle_j == pytest.approx(3500.0)
    cpu_only = restrict_energy_report(full, [])
    assert cpu_only.gpu_energy_j is None and "gpu" in cpu_only.not_measured


def _on_disk(run_dir: Path) -> list[RawProcessResult]:
    raws = _three()
    for r in raws:
        write_process_result(r, run_dir)
    return raws


def test_only_raw_results_with_a_matching_marker_count(tmp_path: Path) -> None:
    _on_disk(tmp_path)
    raw_dir = tmp_path / "raw"
    (raw_dir / "process_1.done").unlink()  # a crash between the JSON and its marker
    text = (raw_dir / "process_2.json").read_text()
    (raw_dir / "process_2.json").write_text(text.replace('"tiny"', '"edited"', 1))
    found = read_raw_run(tmp_path)
    assert [r.process_index for r in found.raws] == [0]
    assert "no completion marker" in found.unusable[1]
    assert "does not match its completion marker" in found.unusable[2]
    result = build_run_result(tmp_path)
    assert result.partial and [p.status for p in result.process_breakdown] == [
        "completed",
        "missing",
        "missing",
    ]
    assert "no completion marker" in (result.process_breakdown[1].reason or "")
    marker = json.loads((raw_dir / "process_0.done").read_text())
    assert marker["file"] == "process_0.json" and len(marker["sha256"]) == 64


def test_aggregation_is_rerunnable_and_keeps_a_replaced_result(tmp_path: Path) -> None:
    _on_disk(tmp_path)
    outcomes = [ProcessOutcome(process_index=i, status="completed") for i in range(3)]
    write_launch_record(_launch(outcomes), tmp_path)
    first, path = aggregate_run_dir(tmp_path)
    again, _ = aggregate_run_dir(tmp_path)
    assert again == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "result.json"]  # unchanged
    path.write_text(path.read_text().replace('"llem_version": "9.9"', '"llem_version": "0.1"'))
    redone, _ = aggregate_run_dir(tmp_path)
    assert redone == first
    kept = [p.name for p in tmp_path.iterdir() if p.name.startswith("result.replaced-")]
    assert len(kept) == 1 and '"0.1"' in (tmp_path / kept[0]).read_text()
    with pytest.raises(FileExistsError):
        write_launch_record(_launch(outcomes), tmp_path)


def test_cli_aggregate_prints_the_summary_and_exits_2_naming_a_bad_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llenergymeasure.cli.app import main

    _on_disk(tmp_path / "run")
    with pytest.raises(SystemExit) as ok:
        main(["aggregate", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert ok.value.code in (0, None)
    assert "processes              3 (0: gpu:0" in out and (tmp_path / "run/result.json").exists()
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "nowhere"):
        with pytest.raises(SystemExit) as err:
            main(["aggregate", str(bad)])
        assert err.value.code == 2
        assert str(bad) in capsys.readouterr().err
