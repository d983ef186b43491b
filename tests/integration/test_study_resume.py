"""A 2x2 sweep x 2 cycles, SIGKILLed mid-run - first the study process alone, then its
whole process group - and resumed each time: nothing lost, duplicated or overwritten, no
orphan left measuring; CIs match a recomputation; a concurrent reader never sees a partial
manifest."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from study_helpers import (
    assert_results_match_manifest,
    read_manifest_json,
    subprocess_env,
    tiny_study,
)

from llenergymeasure.domain.study import STUDY_METRICS
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.study.stats import bootstrap_ci
from llenergymeasure.study.summary import CI_SEED, N_RESAMPLES, format_study_table

pytestmark = pytest.mark.slow

RUN_STUDY = """
import sys
from pathlib import Path
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.study.runner import StudyRunner
study = StudyConfig.model_validate_json(Path(sys.argv[1]).read_text())
resume_dir = Path(sys.argv[3]) if len(sys.argv) > 3 else None
StudyRunner(study, results_dir=Path(sys.argv[2]), resume_dir=resume_dir).run()
"""

# Reads every manifest under a folder as fast as it can until told to stop; prints counts.
READER = """
import json, sys, time
from pathlib import Path
root, stop = Path(sys.argv[1]), Path(sys.argv[2])
good = bad = 0
errors = []
while not stop.exists():
    for path in root.glob("*/study_manifest.json"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        try:
            json.loads(data)
            good += 1
        except ValueError as e:
            bad += 1
            errors.append(repr(e))
    time.sleep(0.002)
print(json.dumps({"good": good, "bad": bad, "errors": errors[:5]}))
"""


def test_sigkill_mid_study_then_resume_completes_everything_once(tmp_path: Path) -> None:
    study = tiny_study(
        "resume",
        {"pytorch.batch_size": [1, 2], "max_output_tokens": [2, 3]},
        n_cycles=2,
        experiment_timeout_seconds=300,
    )
    study_file = tmp_path / "study.json"
    study_file.write_text(study.model_dump_json())
    out, stop = tmp_path / "results", tmp_path / "stop-reader"
    out.mkdir()
    env = subprocess_env()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(out), str(stop)], stdout=subprocess.PIPE, env=env
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", RUN_STUDY, str(study_file), str(out)],
        env=env,
        start_new_session=True,  # its own process group, to kill it with its child later
    )
    try:  # 1. SIGKILL of the study process alone: its running child must die with it
        study_dir = _wait_for_completed(out, at_least=2, timeout_s=400)
        child = _running_child(study_dir)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        if child is not None:
            _assert_gone(child)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    killed = read_manifest_json(study_dir)
    assert killed["status"] == "running"  # nobody could mark it: SIGKILL
    assert_results_match_manifest(study_dir)
    before = {p: p.read_bytes() for p in study_dir.rglob("result.json")}
    assert len(before) >= 2

    resumed = subprocess.Popen(
        [sys.executable, "-c", RUN_STUDY, str(study_file), str(out), str(study_dir)],
        env=env,
        start_new_session=True,
    )
    try:  # 2. SIGKILL of the whole group of the resumed run (parent and child together)
        _wait_for_completed(out, at_least=len(before) + 1, timeout_s=400)
    finally:
        os.killpg(resumed.pid, signal.SIGKILL)
        resumed.wait()
    assert_results_match_manifest(study_dir)
    for path, data in before.items():
        assert path.read_bytes() == data
    before = {p: p.read_bytes() for p in study_dir.rglob("result.json")}

    result = StudyRunner(study, results_dir=out, resume=True).run()

    stop.touch()
    reads = json.loads(reader.communicate(timeout=60)[0])
    assert reads["bad"] == 0, reads
    assert reads["good"] > 10
    assert result.study_dir == str(study_dir)
    assert result.status == "completed" and result.counts.completed == 8
    manifest = read_manifest_json(study_dir)
    pairs = [(e["config_hash"], e["cycle"]) for e in manifest["entries"]]
    assert len(set(pairs)) == 8 and all(e["status"] == "completed" for e in manifest["entries"])
    referenced = {(study_dir / e["result_path"]).resolve() for e in manifest["entries"]}
    assert len(referenced) == 8
    for path, data in before.items():  # earlier results untouched
        assert path.read_bytes() == data
    # A run that finished writing just as a kill landed is adopted, not run again.
    assert len(list(study_dir.rglob("result.json"))) == 8
    assert_results_match_manifest(study_dir)
    assert manifest["sessions"] == 3
    _check_cis(result)
    table = format_study_table(result)
    assert max(len(line) for line in table.splitlines()) <= 120, table
    assert sum(line.startswith("*") for line in table.splitlines()) == 1


def _check_cis(result) -> None:  # type: ignore[no-untyped-def]
    """Each config's CI equals bootstrap_ci over its two per-cycle values."""
    by_hash: dict[str, list] = {}
    for e in result.experiments:
        by_hash.setdefault(e.config_hash, []).append(e)
    assert len(result.configs) == 4
    for config in result.configs:
        runs = by_hash[config.config_hash]
        assert config.cycles_completed == len(runs) == 2
        for metric in STUDY_METRICS:
            values = [getattr(r, metric) for r in runs]
            stats = config.metrics[metric].stats
            if None in values:
                assert stats is None or stats.n < 2
                continue
            expected = bootstrap_ci(values, n_resamples=N_RESAMPLES, seed=CI_SEED)
            assert stats is not None and expected is not None
            assert stats.ci == expected
            assert min(values) <= stats.ci.low <= stats.mean <= stats.ci.high <= max(values)
    best = [c for c in result.configs if c.best]
    assert len(best) == 1
    best_mean = best[0].metrics["j_per_output_token"].stats.mean
    assert all(c.metrics["j_per_output_token"].stats.mean >= best_mean for c in result.configs)


def _running_child(study_dir: Path) -> int | None:
    """Pid of the experiment child the manifest says is running (None between two)."""
    for e in read_manifest_json(study_dir)["entries"]:
        if e["status"] == "running" and e.get("runner"):
            return int(e["runner"]["pid"])
    return None


def _assert_gone(pid: int) -> None:
    """The process exits within a minute (an orphan would go on measuring)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout=60)


def _wait_for_completed(out: Path, at_least: int, timeout_s: float) -> Path:
    """Poll until a study dir's manifest shows ``at_least`` completed experiments."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in out.glob("*/study_manifest.json"):
            entries = json.loads(path.read_text())["entries"]
            if sum(e["status"] == "completed" for e in entries) >= at_least:
                return path.parent
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} experiments completed in {timeout_s} s")
