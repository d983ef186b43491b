"""`llem run` on a study, stopped by a batch scheduler's signal while an experiment measures
(real tiny model, real signals): exit 128+signal, one line saying how to resume, the
study marked interrupted with the signal named, the summary written, no orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from study_helpers import (
    assert_gone,
    assert_results_match_manifest,
    only_study_dir,
    read_manifest_json,
    subprocess_env,
)

pytestmark = pytest.mark.slow

# Long enough a measurement window (64 prompts x 64 tokens, batch 1) that the signal lands
# inside it; the run is stopped there, so it never costs that long.
STUDY_YAML = """\
study_name: clisig
base:
  model: tiny-llama
  device: cpu
  precision: fp32
  n: 64
  max_input_tokens: 16
  max_output_tokens: 64
  warmup: {n_warmup: 0}
  baseline: {enabled: false}
  telemetry: {enabled: false}
sweep:
  pytorch.batch_size: [1, 2]
execution: {experiment_timeout_seconds: 600, config_gap_seconds: 0, cycle_gap_seconds: 0}
"""


@pytest.mark.parametrize(
    ("sig", "group"),
    [(signal.SIGTERM, False), (signal.SIGHUP, True)],
    ids=["SIGTERM-to-parent", "SIGHUP-to-group"],
)
def test_llem_run_study_stops_on_a_signal_while_measuring(
    tmp_path: Path, sig: signal.Signals, group: bool
) -> None:
    study_file, out = tmp_path / "study.yaml", tmp_path / "results"
    study_file.write_text(STUDY_YAML)
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llenergymeasure", "run", str(study_file), "-o", str(out)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # blocks on the pipe until the child reports a stage
            seen.append(line)
            if line.strip() == "measuring":
                break
        assert seen and seen[-1].strip() == "measuring", "".join(seen)
        child = read_manifest_json(only_study_dir(out))["entries"][0]["runner"]["pid"]
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        stdout, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    stderr = "".join(seen) + rest

    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    study_dir = only_study_dir(out)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"Interrupted by {sig.name}: "), last
    assert f"llem run {study_file} --resume-dir {study_dir}" in last
    assert "results:" in stdout and "cycles" in stdout  # the table of what finished
    assert_gone(child)
    manifest = assert_results_match_manifest(study_dir)
    assert manifest["status"] == "interrupted"
    assert manifest["stopped_reason"] == f"interrupted by {sig.name}"
    assert [(e["status"], e["attempts"]) for e in manifest["entries"]] == [
        ("pending", 1),
        ("pending", 0),
    ]
    summary = json.loads((study_dir / "study_summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["counts"]["not_run"] == 2
