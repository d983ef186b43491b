"""`collect`, `load_results` and the study-aware export: one row per experiment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from report_factory import write_study

from llenergymeasure import load_results
from llenergymeasure.domain.study import STUDY_METRICS, StudyResult
from llenergymeasure.exceptions import ResultsError
from llenergymeasure.reporting.collect import collect
from llenergymeasure.reporting.frame import export, rows
from llenergymeasure.results.persistence import read_result


def test_collect_finds_studies_cycles_and_labels(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "s", batch_sizes=(1, 4), n_cycles=2)
    c = collect(tmp_path)
    assert [s.name for s in c.studies] == ["s"]
    assert c.studies[0].swept_fields == ("pytorch.batch_size",)
    got = sorted((r.config_label, r.cycle) for r in c.runs)
    assert got == [
        ("batch_size=1", 1),
        ("batch_size=1", 2),
        ("batch_size=4", 1),
        ("batch_size=4", 2),
    ]
    assert all(r.study is c.studies[0] for r in c.runs)
    assert c.runs[0].key_fields["pytorch.batch_size"] in (1, 4)
    # the same study found from its own directory
    assert len(collect(study_dir).runs) == 4


def test_load_results_round_trips_every_result(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "rt", batch_sizes=(1, 2, 8), n_cycles=3)
    df = load_results(tmp_path)
    study = StudyResult.model_validate_json((study_dir / "study_summary.json").read_text())
    paths = {c.label: [study_dir / p for p in c.result_paths] for c in study.configs}
    assert len(df) == sum(len(v) for v in paths.values()) == 9
    for label, files in paths.items():
        for cycle, file in enumerate(files, start=1):
            result = read_result(file)
            row = df[df.result_path == str(file)]
            assert len(row) == 1
            r = row.iloc[0]
            for metric in STUDY_METRICS:
                assert r[metric] == pytest.approx(getattr(result, metric)), metric
            assert r["gpu_energy_j"] == pytest.approx(result.energy.gpu_energy_j)  # type: ignore[union-attr]
            assert (r["study_name"], r["config_label"], r["cycle"]) == ("rt", label, cycle)
            assert r["config_hash"] == result.config_hash
            assert r["pytorch.batch_size"] == result.config["pytorch"]["batch_size"]
            assert r["energy_basis"] == "gpu gross counter" and not r["energy_estimate"]
    assert df.swept_fields.unique().tolist() == ["pytorch.batch_size"]
    for name in ("ttft_ms_mean", "itl_ms_p99", "output_tokens_per_s", "j_per_output_token"):
        assert name in df.columns


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_has_study_and_cycle_columns(tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    write_study(tmp_path / "r", "ex", batch_sizes=(1, 4), n_cycles=2)
    out = export(tmp_path / "r", tmp_path / f"all{suffix}")
    df = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(df.columns[:5]) == [
        "study_name",
        "study_dir",
        "cycle",
        "config_label",
        "config_hash",
    ]
    assert len(df) == 4 and set(df.cycle) == {1, 2} and set(df.study_name) == {"ex"}
    assert set(df["pytorch.batch_size"]) == {1, 4}


def test_unreadable_files_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_study(tmp_path, "bad", batch_sizes=(1,), n_cycles=2)
    broken = tmp_path / "stray_run" / "result.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="llenergymeasure"):
        c = collect(tmp_path)
    assert len(c.runs) == 2
    assert len(c.problems) == 1 and str(broken) in c.problems[0] and "skipped" in c.problems[0]
    assert str(broken) in caplog.text
    assert len(rows(c)) == 2


def test_no_results_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "only_junk").mkdir()
    (tmp_path / "only_junk" / "result.json").write_text("[]")
    with pytest.raises(ResultsError, match=r"none readable.*study directory.*\n.*only_junk"):
        collect(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match=r"no result\.json under it"):
        collect(tmp_path / "empty")
