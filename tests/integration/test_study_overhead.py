"""A real tiny study says where its time went, and its experiments share what they can:
the breakdown adds up to each process's wall time, the second experiment reads the
synthetic prompts the first one built into the study's cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from study_helpers import TINY_BASE

from llenergymeasure.config.models import StudyConfig
from llenergymeasure.domain.timing import seconds_text
from llenergymeasure.results.persistence import read_result
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.study.summary import format_study_timing

pytestmark = pytest.mark.slow


def test_breakdown_adds_up_and_the_prompt_cache_is_shared(tmp_path: Path) -> None:
    base = {**TINY_BASE, "dataset": {"input_len": 12, "output_len": 2, "seed": 3}, "n": 3}
    study = StudyConfig(
        study_name="overhead",
        base=base,
        sweep={"pytorch.batch_size": [1, 3]},
        execution={"n_cycles": 1},
    )
    result = StudyRunner(study, results_dir=tmp_path, no_gaps=True).run()
    assert result.counts.completed == 2
    study_dir = Path(result.study_dir)

    results = [read_result(study_dir / p) for c in result.configs for p in c.result_paths]
    assert [r.dataset_info["cache"] for r in results] == ["miss", "hit"]  # type: ignore[index]
    assert len(list((study_dir / "cache" / "prompts").glob("synthetic-*.json"))) == 1
    assert all("cleanup" in r.phase_durations_s for r in results)  # in the table's "other"

    for t in result.timing.experiments:
        b = t.breakdown
        assert b is not None and b.wall_s == t.subprocess_wall_s
        assert not b.start_derived and b.start_s is not None and b.imports_s is not None
        assert b.save_s is not None and b.exit_s is not None
        parts = [v for v in b.cells().values() if v is not None]
        assert sum(parts) == pytest.approx(t.subprocess_wall_s, abs=1e-6)
        shown = sum(float(seconds_text(v)) for v in parts)
        assert shown == pytest.approx(float(seconds_text(b.wall_s)), abs=0.01 * len(parts))
    total = result.timing.breakdown
    assert total is not None
    assert total.wall_s == pytest.approx(result.timing.experiments_wall_s)

    on_disk = json.loads((study_dir / "study_summary.json").read_text())
    assert on_disk["timing"]["experiments"][0]["breakdown"]["start_s"] is not None
    table = format_study_timing(result)
    assert "batch_size=1" in table and "total (2)" in table and "overhead" in table
