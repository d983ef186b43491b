"""Corrupt files in a study directory (issue 11, case 5): readers name the bad file and skip
it; resume re-runs an entry whose result is unreadable (the bad file kept aside, renamed);
a corrupt manifest under --resume is an error (exit 2) naming it, never a new study."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from study_helpers import (
    assert_results_match_manifest,
    only_study_dir,
    read_manifest_json,
    result_files,
    tiny_study,
)
from typer.testing import CliRunner

from llenergymeasure.cli.app import app
from llenergymeasure.domain.study import StudyResult
from llenergymeasure.results.export import export_results
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FaultPlan

pytestmark = pytest.mark.slow

FAKE = FaultPlan(fake_result=True).target()


def _study():  # type: ignore[no-untyped-def]
    return tiny_study("corrupt", {"max_output_tokens": [2, 3]}, n_cycles=2)


def test_truncated_result_is_named_skipped_then_rerun_on_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = StudyRunner(_study(), results_dir=tmp_path, worker_target=FAKE).run()
    study_dir = only_study_dir(tmp_path)
    assert first.best is not None
    best_before = first.best.config_hash
    entry = read_manifest_json(study_dir)["entries"][0]  # the best config, cycle 1
    bad = study_dir / entry["result_path"]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a truncated write, a bad disk block
    others = {p: p.read_bytes() for p in result_files_or_skip(study_dir) if p != bad.resolve()}

    caplog.set_level(logging.WARNING)
    loaded = StudyResult.load(study_dir)
    assert len(loaded.experiments) == 3
    assert any(str(bad) in w for w in loaded.warnings)
    export_results(study_dir, tmp_path / "all.csv")
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 1 + 3
    assert any(str(bad) in r.getMessage() for r in caplog.records)

    again = StudyRunner(
        _study(), results_dir=tmp_path, resume_dir=study_dir, worker_target=FAKE
    ).run()

    aside = bad.with_name("result.json.corrupt")
    assert aside.read_bytes() == data[: len(data) // 2]  # kept, renamed, never deleted
    assert not bad.exists()
    manifest = assert_results_match_manifest(study_dir)
    assert manifest["entries"][0]["attempts"] == 2
    assert manifest["entries"][0]["set_aside"] == [str(aside.relative_to(study_dir))]
    assert again.counts.completed == 4 and len(result_files(study_dir)) == 4
    assert all(c.cycles_completed == 2 for c in again.configs)
    assert again.best is not None and again.best.config_hash == best_before
    assert all(p.read_bytes() == b for p, b in others.items())
    assert any("unreadable result" in w and str(bad) in w for w in again.warnings)


def result_files_or_skip(study_dir: Path) -> list[Path]:
    """Every result.json path (without parsing: one of them is broken)."""
    return [p.resolve() for p in study_dir.rglob("result.json")]


@pytest.mark.parametrize("how", ["--resume-dir", "--resume"])
def test_a_corrupt_manifest_under_resume_exits_2_naming_it(tmp_path: Path, how: str) -> None:
    StudyRunner(_study(), results_dir=tmp_path, worker_target=FAKE).run()
    study_dir = only_study_dir(tmp_path)
    manifest = study_dir / "study_manifest.json"
    data = json.loads(manifest.read_text())
    data["status"] = "interrupted"
    manifest.write_text(json.dumps(data)[:-40])  # truncated
    study_file = tmp_path / "study.yaml"
    study_file.write_text(json.dumps(_study().model_dump(mode="json", exclude_none=True)))

    args = ["run", str(study_file), "-o", str(tmp_path)]
    args += ["--resume-dir", str(study_dir)] if how == "--resume-dir" else ["--resume"]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2, result.output
    assert str(manifest) in result.stderr and "not a valid study manifest" in result.stderr
    assert "Traceback" not in result.output
    assert [p.parent for p in tmp_path.glob("*/study_manifest.json")] == [study_dir]  # no new
