"""What real machines do to a study (issue 11): parent death, orphans, stop signals, two
runners on one directory. Real processes and real signals; experiments are FaultPlan
children that stop at a gate while "measuring" (so a test acts at a known moment, without
sleeping) and otherwise write small fake results (no torch: fast). After every scenario
the result.json files on disk equal the completed manifest entries, each (config, cycle)
exactly once, and earlier result files are byte-identical."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest
from study_helpers import (
    assert_gone,
    assert_results_match_manifest,
    kill_and_reap,
    measuring_pid,
    only_study_dir,
    read_manifest_json,
    result_files,
    start_study,
    tiny_study,
    wait_until,
)

from llenergymeasure.exceptions import StudyLockedError
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FaultPlan, open_gate

pytestmark = pytest.mark.slow

FAKE: dict[str, Any] = {"fake_result": True}
RUN_ORDER = [(f"max_output_tokens={m}", c) for c in (1, 2) for m in (2, 3)]


def _study(name: str = "durable", **execution: Any):  # type: ignore[no-untyped-def]
    """2 configs x 2 cycles, interleaved: positions 0..3 = A1 B1 A2 B2."""
    return tiny_study(name, {"max_output_tokens": [2, 3]}, n_cycles=2, **execution)


def _gated(gate: Path, position: int, after_result: bool = False) -> dict[str, Any]:
    """A plan whose experiment at ``position`` (its label, cycle) stops at the gate."""
    label, cycle = RUN_ORDER[position]
    return {
        **FAKE,
        "gate_on": [label],
        "cycles": [cycle],
        "gate_dir": str(gate),
        "gate_after_result": after_result,
    }


def _resume(study: Any, study_dir: Path) -> Any:
    """Resume in this process with fast fake results."""
    target = FaultPlan(fake_result=True).target()
    return StudyRunner(study, results_dir=study_dir.parent, resume_dir=study_dir,
                       worker_target=target).run()  # fmt: skip


def _snapshot(study_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in result_files(study_dir)}


# ---- 1. parent death ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("group", "start"),
    [(False, "forkserver"), (True, "forkserver"), (False, "spawn")],
    ids=["parent-alone", "whole-group", "parent-alone-spawn"],
)
def test_sigkill_while_measuring_leaves_no_orphan_and_resume_runs_each_once(
    tmp_path: Path, group: bool, start: str
) -> None:
    study, gate, out = _study(), tmp_path / "gate", tmp_path / "results"
    gate.mkdir()
    env = {"LLEM_CHILD_START": start}  # forked from the study's fork server, or spawned
    proc, _ = start_study(tmp_path, study, out, _gated(gate, 1), env=env)
    child = measuring_pid(gate, 1)
    server = psutil.Process(child).ppid()  # the study's fork server, or the study itself
    assert (server == proc.pid) == (start == "spawn")
    study_dir = only_study_dir(out)
    running = read_manifest_json(study_dir)["entries"][1]
    assert running["status"] == "running"
    assert running["runner"]["pid"] == child and running["runner"]["host"] == socket.gethostname()
    assert running["runner"]["start_time"] == pytest.approx(
        psutil.Process(child).create_time(), abs=0.05
    )

    assert kill_and_reap(proc, signal.SIGKILL, group) == -signal.SIGKILL

    assert_gone(child)  # the parent-death signal: no orphan measures on
    assert_gone(server)  # nor a fork server
    assert not psutil.pid_exists(child) and not psutil.pid_exists(server)
    assert_results_match_manifest(study_dir)
    before = _snapshot(study_dir)
    assert len(before) == 1

    result = _resume(study, study_dir)

    assert result.status == "completed" and result.counts.completed == 4
    manifest = assert_results_match_manifest(study_dir)
    assert len(result_files(study_dir)) == 4
    assert [e["attempts"] for e in manifest["entries"]] == [1, 2, 1, 1]
    assert all(p.read_bytes() == data for p, data in before.items())


def test_result_written_but_not_recorded_is_adopted_not_rerun(tmp_path: Path) -> None:
    study, gate, out = _study(), tmp_path / "gate", tmp_path / "results"
    gate.mkdir()
    proc, _ = start_study(tmp_path, study, out, _gated(gate, 1, after_result=True))
    child = measuring_pid(gate, 1)  # it has written result.json and not yet reported it
    kill_and_reap(proc, signal.SIGKILL, group=False)
    assert_gone(child)
    study_dir = only_study_dir(out)
    assert read_manifest_json(study_dir)["entries"][1]["status"] == "running"
    assert_results_match_manifest(study_dir)  # the unrecorded one is in entry 1's run dir
    before = _snapshot(study_dir)
    assert len(before) == 2  # one recorded, one not

    result = _resume(study, study_dir)

    manifest = assert_results_match_manifest(study_dir)
    entry = manifest["entries"][1]
    assert (entry["status"], entry["adopted"], entry["attempts"]) == ("completed", True, 1)
    assert result.counts.completed == 4 and len(result_files(study_dir)) == 4
    assert any("adopted" in w for w in result.warnings)
    assert all(p.read_bytes() == data for p, data in before.items())


def test_crash_after_writing_the_result_keeps_the_result(tmp_path: Path) -> None:
    study = _study()
    plan = FaultPlan(fake_result=True, crash_after_result_on=("max_output_tokens=3",))

    result = StudyRunner(study, results_dir=tmp_path, worker_target=plan.target()).run()

    assert result.status == "completed" and result.counts.completed == 4
    manifest = assert_results_match_manifest(only_study_dir(tmp_path))
    assert [e["adopted"] for e in manifest["entries"]] == [False, True, False, True]


ORPHAN = """
import sys
from pathlib import Path
from llenergymeasure.testing import wait_at_gate
wait_at_gate(sys.argv[1], int(sys.argv[2]))
if sys.argv[3] == "write":
    Path(sys.argv[4]).write_bytes(Path(sys.argv[5]).read_bytes())
"""


@pytest.mark.parametrize("finishes", [True, False], ids=["finishes", "past-timeout"])
def test_a_live_orphan_is_waited_for_or_stopped_before_anything_else_starts(
    tmp_path: Path, finishes: bool
) -> None:
    """Where the parent-death signal did not reach an experiment (another OS, a process
    that escaped it), the resume must not start a second experiment beside it."""
    import subprocess
    import sys

    from study_helpers import subprocess_env

    study = _study(experiment_timeout_seconds=600 if finishes else 4)
    gate, out = tmp_path / "gate", tmp_path / "results"
    gate.mkdir()
    proc, _ = start_study(tmp_path, study, out, _gated(gate, 1))
    killed_child = measuring_pid(gate, 1)
    kill_and_reap(proc, signal.SIGKILL, group=False)
    assert_gone(killed_child)
    study_dir = only_study_dir(out)
    manifest = read_manifest_json(study_dir)
    entry = manifest["entries"][1]
    # Stand-in for an orphan that survived: a process that will write entry 1's result.
    template = next(iter(result_files(study_dir)))  # entry 0's result: same schema
    data = json.loads(template.read_text())
    data["config_hash"] = entry["config_hash"]
    source = tmp_path / "orphan-result.json"
    source.write_text(json.dumps(data))
    target = study_dir / entry["run_dir"] / "result.json"
    orphan_gate = tmp_path / "orphan-gate"
    orphan_gate.mkdir()
    orphan = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(orphan_gate), "1", "write", str(target), str(source)],
        env=subprocess_env(),
    )
    measuring_pid(orphan_gate, 1)
    entry["runner"]["pid"] = orphan.pid
    entry["runner"]["start_time"] = psutil.Process(orphan.pid).create_time()
    (study_dir / "study_manifest.json").write_text(json.dumps(manifest))

    resume, log = start_study(tmp_path, study, out, FAKE, study_dir, "resume.log")
    wait_until(lambda: "is still running: waiting" in log.read_text(), what="orphan wait")
    assert "started:" not in log.read_text()  # nothing else starts while it lives
    if finishes:
        open_gate(orphan_gate, 1)
    assert resume.wait(timeout=120) == 0, log.read_text()
    orphan.wait(timeout=60)

    manifest = assert_results_match_manifest(study_dir)
    entry = manifest["entries"][1]
    if finishes:
        assert (entry["adopted"], entry["attempts"]) == (True, 1)
        assert "started: 2 " not in log.read_text()
    else:
        assert "stopping pid" in log.read_text()
        assert orphan.returncode == -signal.SIGTERM
        assert (entry["adopted"], entry["attempts"]) == (False, 2)
    assert len(result_files(study_dir)) == 4


# ---- 2. stop signals -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sig", "group"),
    [
        (signal.SIGTERM, False),
        (signal.SIGTERM, True),
        (signal.SIGHUP, False),
        (signal.SIGINT, True),
    ],
    ids=["SIGTERM-parent", "SIGTERM-group", "SIGHUP-parent", "SIGINT-group"],
)
def test_stop_signals_interrupt_the_study_like_ctrl_c(
    tmp_path: Path, sig: signal.Signals, group: bool
) -> None:
    study, gate, out = _study(), tmp_path / "gate", tmp_path / "results"
    gate.mkdir()
    proc, log = start_study(tmp_path, study, out, _gated(gate, 1))
    child = measuring_pid(gate, 1)

    code = kill_and_reap(proc, sig, group)

    assert code == 128 + sig, log.read_text()
    assert_gone(child)
    study_dir = only_study_dir(out)
    assert f"interrupted: {int(sig)} {study_dir}" in log.read_text()
    manifest = assert_results_match_manifest(study_dir)
    assert manifest["status"] == "interrupted"
    assert manifest["stopped_reason"] == f"interrupted by {sig.name}"
    assert [(e["status"], e["attempts"]) for e in manifest["entries"]] == [
        ("completed", 1),
        ("pending", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    summary = json.loads((study_dir / "study_summary.json").read_text())
    assert (summary["status"], summary["counts"]["completed"]) == ("interrupted", 1)

    result = _resume(study, study_dir)

    assert result.status == "completed"
    assert len(assert_results_match_manifest(study_dir)["entries"]) == 4
    assert len(result_files(study_dir)) == 4


def test_signal_handlers_are_restored_after_a_study(tmp_path: Path) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    StudyRunner(
        _study(), results_dir=tmp_path, worker_target=FaultPlan(fake_result=True).target()
    ).run()
    assert {s: signal.getsignal(s) for s in before} == before


# ---- 3. one runner per study directory -----------------------------------------------------
def test_a_second_runner_on_a_held_study_exits_2_naming_the_holder(tmp_path: Path) -> None:
    study, gate, out = _study(), tmp_path / "gate", tmp_path / "results"
    gate.mkdir()
    first, _ = start_study(tmp_path, study, out, _gated(gate, 0))
    measuring_pid(gate, 0)
    study_dir = only_study_dir(out)

    second, log = start_study(tmp_path, study, out, FAKE, study_dir, "second.log")
    assert second.wait(timeout=120) == 2
    message = log.read_text()
    assert f"pid {first.pid} on host {socket.gethostname()}" in message
    assert str(study_dir) in message
    with pytest.raises(StudyLockedError, match=f"pid {first.pid}"):
        StudyRunner(study, results_dir=out, resume=True).run()  # --resume finds it too

    open_gate(gate, 0)
    assert first.wait(timeout=120) == 0
    manifest = assert_results_match_manifest(study_dir)
    assert [e["attempts"] for e in manifest["entries"]] == [1, 1, 1, 1]
    assert len(result_files(study_dir)) == 4  # not 7 for 4 entries


# ---- 9. files others can read --------------------------------------------------------------
def test_every_file_of_a_study_is_created_with_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    plan = FaultPlan(fake_result=True, raise_on=("max_output_tokens=3",))
    before = os.umask(0o022)
    try:
        StudyRunner(_study(max_consecutive_failures=10), results_dir=tmp_path,
                    worker_target=plan.target()).run()  # fmt: skip
    finally:
        os.umask(before)
    study_dir = only_study_dir(tmp_path)
    files = [p for p in study_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"study_manifest.json", "study_summary.json", "result.json", ".study.lock"} <= names
    assert any(p.parent.name == "failures" for p in files)
    modes = {str(p.relative_to(study_dir)): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes
