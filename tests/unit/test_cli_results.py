"""`llem results | export | report | compare` on saved results."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_factory import write_study
from typer.testing import CliRunner

from llenergymeasure.cli.app import app
from llenergymeasure.cli.display import format_experiment
from llenergymeasure.domain.study import StudyResult
from llenergymeasure.results.persistence import read_result
from llenergymeasure.study.summary import format_study_table

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_results_prints_the_study_table_as_llem_run_did(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "cli", n_cycles=2)
    code, out, _ = invoke("results", str(study_dir))
    assert code == 0
    summary = StudyResult.load(study_dir)
    assert out == f"{format_study_table(summary)}\nresults: {study_dir}\n"


def test_results_of_one_run_prints_format_experiment(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "one", batch_sizes=(1,), n_cycles=1)
    run_dir = next(study_dir.glob("*/result.json")).parent
    code, out, _ = invoke("results", str(run_dir))
    assert code == 0
    assert out == format_experiment(read_result(run_dir), str(run_dir)) + "\n"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(tmp_path: Path, fmt: str) -> None:
    write_study(tmp_path / "r", "ex", n_cycles=2)
    target = tmp_path / f"all.{fmt}"
    code, out, _ = invoke("export", str(tmp_path / "r"), f"--{fmt}", str(target))
    assert code == 0 and target.is_file() and "wrote 4 row(s)" in out


def test_export_needs_exactly_one_format(tmp_path: Path) -> None:
    write_study(tmp_path, "ex", n_cycles=1)
    code, _, err = invoke("export", str(tmp_path))
    assert code == 2 and "exactly one of --csv OUT or --parquet OUT" in err


def test_report_writes_the_html(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "rep", n_cycles=2)
    code, out, _ = invoke("report", str(study_dir), "-o", str(tmp_path / "r.html"))
    assert code == 0 and out.strip() == f"report: {tmp_path / 'r.html'}"
    assert "llem-chart-count" in (tmp_path / "r.html").read_text()


def test_compare(tmp_path: Path) -> None:
    a = write_study(tmp_path / "a", "cmp", n_cycles=2)
    b = write_study(tmp_path / "b", "cmp", n_cycles=2, seed=9)
    code, out, _ = invoke("compare", str(a), str(b))
    assert code == 0
    assert "Compare B / A" in out and "batch_size=1" in out and "batch_size=4" in out


@pytest.mark.parametrize("command", ["results", "report", "export", "compare"])
def test_a_directory_without_results_exits_2_naming_it(tmp_path: Path, command: str) -> None:
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    args = [command, str(empty)]
    if command == "export":
        args += ["--csv", str(tmp_path / "x.csv")]
    if command == "compare":
        args.append(str(empty))
    code, out, err = invoke(*args)
    assert code == 2, (out, err)
    assert f"no results in {empty}" in err and "study directory" in err
    assert out == ""


def test_unreadable_result_is_named_on_stderr_and_skipped(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "w", batch_sizes=(1,), n_cycles=1)
    bad = study_dir / "junk" / "result.json"
    bad.parent.mkdir()
    bad.write_text("{")
    code, out, err = invoke("export", str(tmp_path), "--csv", str(tmp_path / "x.csv"))
    assert code == 0 and "wrote 1 row(s)" in out
    assert str(bad) in err and "skipped" in err
