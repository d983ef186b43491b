"""A study's experiments fail alone: exceptions, hard exits and timeouts (real spawn children)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from study_helpers import only_study_dir, read_manifest_json, subprocess_env, tiny_study

from llenergymeasure.exceptions import StudyError
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import INJECTED_EXIT_CODE, FaultPlan

pytestmark = pytest.mark.slow


def test_raise_and_hard_exit_fail_alone_while_real_experiment_completes(tmp_path: Path) -> None:
    study = tiny_study(
        "faults",
        {"max_output_tokens": [2, 3, 4]},
        max_consecutive_failures=5,
        experiment_timeout_seconds=300,
    )
    faults = FaultPlan(raise_on=("max_output_tokens=3",), exit_on=("max_output_tokens=4",))

    result = StudyRunner(study, results_dir=tmp_path, worker_target=faults.target()).run()

    assert result.status == "failed"  # ran to the end with failures: resumable
    assert result.stopped_reason is None
    c = result.counts
    assert (c.planned, c.completed, c.failed, c.not_run) == (3, 1, 2, 0)
    assert [e.config["max_output_tokens"] for e in result.experiments] == [2]
    reasons = {f.label: f.reason for f in result.failures}
    assert "InjectedFault" in reasons["max_output_tokens=3"]
    assert reasons["max_output_tokens=4"] == f"exited with code {INJECTED_EXIT_CODE}"
    study_dir = only_study_dir(tmp_path)
    raised = (study_dir / result.failures[0].failure_path).read_text()  # type: ignore[operator]
    assert "Traceback" in raised and "injected failure" in raised
    assert len(list(study_dir.rglob("result.json"))) == 1
    entries = read_manifest_json(study_dir)["entries"]
    assert [e["status"] for e in entries] == ["completed", "failed", "failed"]
    assert (study_dir / "study_summary.json").is_file()


def test_hang_times_out_without_busy_waiting_and_study_goes_on(tmp_path: Path) -> None:
    study = tiny_study(
        "hang",
        {"max_output_tokens": [2, 3, 4]},
        max_consecutive_failures=10,
        experiment_timeout_seconds=3,
    )
    faults = FaultPlan(
        hang_on=("max_output_tokens=2",),
        raise_on=("max_output_tokens=3",),
        exit_on=("max_output_tokens=4",),
    )
    cpu0, wall0 = time.process_time(), time.monotonic()

    result = StudyRunner(study, results_dir=tmp_path, worker_target=faults.target()).run()

    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    reasons = [f.reason for f in result.failures]
    assert reasons[0] == "timed out after 3 s"
    assert "InjectedFault" in reasons[1]
    assert reasons[2] == f"exited with code {INJECTED_EXIT_CODE}"
    assert result.counts.failed == 3 and result.status == "failed"
    assert 3.0 <= wall_s < 60.0
    # The parent blocked in poll/join: its CPU time is a fraction of the 3 s it waited.
    assert cpu_s < 0.5 * wall_s, (cpu_s, wall_s)
    assert _experiment_children() == []  # the hung child was killed


def _experiment_children() -> list[str]:
    """Command lines of our child processes, the multiprocessing resource tracker aside."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "resource_tracker" not in cmd:
            found.append(cmd)
    return found


def test_consecutive_failures_stop_then_changed_design_refuses_resume(tmp_path: Path) -> None:
    study = tiny_study("stop", {"max_output_tokens": [2, 3, 4]}, max_consecutive_failures=2)
    raise_all = FaultPlan(raise_on=("max_output_tokens",)).target()

    first = StudyRunner(study, results_dir=tmp_path, worker_target=raise_all).run()

    assert first.status == "stopped"
    assert first.stopped_reason is not None and "2 consecutive" in first.stopped_reason
    assert (first.counts.failed, first.counts.not_run) == (2, 1)
    changed = tiny_study("stop", {"max_output_tokens": [2, 3, 5]}, max_consecutive_failures=2)
    with pytest.raises(StudyError) as err:
        StudyRunner(changed, results_dir=tmp_path, resume=True, worker_target=raise_all).run()
    message = str(err.value)
    assert "config added: max_output_tokens=5" in message
    assert "config removed: max_output_tokens=4" in message
    more_cycles = tiny_study("stop", {"max_output_tokens": [2, 3, 4]}, n_cycles=2)
    with pytest.raises(StudyError, match="n_cycles: 1 -> 2"):
        StudyRunner(more_cycles, results_dir=tmp_path, resume=True).run()

    # Same design: resumes the same directory and retries every experiment not completed.
    again = StudyRunner(study, results_dir=tmp_path, resume=True, worker_target=raise_all).run()

    assert again.study_dir == first.study_dir
    manifest = read_manifest_json(only_study_dir(tmp_path))
    assert manifest["sessions"] == 2
    assert [e["attempts"] for e in manifest["entries"]] == [2, 2, 0]
    assert len(list((only_study_dir(tmp_path) / "failures").iterdir())) == 4  # none overwritten


INTERRUPTIBLE_STUDY = """
import sys
from pathlib import Path
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FaultPlan
study = StudyConfig.model_validate_json(Path(sys.argv[1]).read_text())
StudyRunner(study, results_dir=Path(sys.argv[2]), worker_target=FaultPlan(hang_on=("max_output_tokens",)).target()).run()
"""


def test_ctrl_c_marks_study_interrupted_and_running_experiment_pending(tmp_path: Path) -> None:
    study = tiny_study("ctrlc", {"max_output_tokens": [2, 3]}, experiment_timeout_seconds=600)
    study_file = tmp_path / "study.json"
    study_file.write_text(study.model_dump_json())
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE_STUDY, str(study_file), str(out)],
        env=subprocess_env(),
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until(lambda: _first_status(out) == "running", timeout_s=60)
        time.sleep(1.0)  # let the child start its hang
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        stderr = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    manifest = read_manifest_json(only_study_dir(out))
    assert manifest["status"] == "interrupted"
    assert [(e["status"], e["attempts"]) for e in manifest["entries"]] == [
        ("pending", 1),
        ("pending", 0),
    ]
    assert (only_study_dir(out) / "study_summary.json").is_file()


def _first_status(out: Path) -> str | None:
    """Status of the first manifest entry under ``out`` (None before there is one)."""
    paths = list(out.glob("*/study_manifest.json"))
    return read_manifest_json(paths[0].parent)["entries"][0]["status"] if paths else None


def _wait_until(condition, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` every 0.1 s until true or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
