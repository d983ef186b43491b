"""A full disk (issue 11, case 4): every failed write is a clear error naming the path and
the errno text; the manifest stays consistent (a result written but not recorded is adopted
on resume); a single experiment whose result cannot be written still prints its summary.

The disk is a real small tmpfs where the test may mount one (root with CAP_SYS_ADMIN, as
in CI); elsewhere ENOSPC is injected at the write call (``testing.inject_enospc``). The
test ids say which ran (``[tmpfs]`` or ``[injected-enospc]``), and so does a printed line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from study_helpers import (
    assert_results_match_manifest,
    measuring_pid,
    only_study_dir,
    read_manifest_json,
    result_files,
    start_study,
    tiny_study,
)

from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FaultPlan, open_gate

pytestmark = pytest.mark.slow


def _can_mount_tmpfs() -> bool:
    """Whether this process may mount a tmpfs (probed once, at collection)."""
    if os.geteuid() != 0 or not os.path.exists("/proc/filesystems"):
        return False
    probe = tempfile.mkdtemp(prefix="llem-mount-probe-")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], capture_output=True
        )
        if done.returncode != 0:
            return False
        subprocess.run(["umount", probe], check=False)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


#: FULL_DISK_INJECT=1 forces the fallback (to check it where mounting works).
MODE = (
    "tmpfs" if not os.environ.get("FULL_DISK_INJECT") and _can_mount_tmpfs() else "injected-enospc"
)


@dataclass
class SmallDisk:
    """A results directory whose file system the test can fill and free."""

    root: Path
    mode: str
    flag: Path  # injected mode: "full" while this file exists

    def fill(self) -> None:
        if self.mode == "injected-enospc":
            self.flag.write_text("full")
            return
        with (self.root / ".filler").open("wb") as f:  # until the kernel says no
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC

    def free(self) -> None:
        self.flag.unlink(missing_ok=True)
        (self.root / ".filler").unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        return {"ENOSPC_FLAG": str(self.flag)} if self.mode == "injected-enospc" else {}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    disk = SmallDisk(root, MODE, tmp_path / "enospc-flag")
    print(f"full-disk test: {'a real 8 MiB tmpfs' if MODE == 'tmpfs' else 'injected ENOSPC'}")
    if MODE == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], check=True)
    try:
        yield disk
    finally:
        if MODE == "tmpfs":
            subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.mark.parametrize("mode", [MODE])
@pytest.mark.parametrize("when", ["after-result", "before-result"])
def test_study_on_a_full_disk_fails_clearly_and_resumes_consistently(
    tmp_path: Path, small_disk: SmallDisk, mode: str, when: str
) -> None:
    study = tiny_study("disk", {"max_output_tokens": [2, 3]}, n_cycles=2)
    gate, out = tmp_path / "gate", small_disk.root / "results"
    gate.mkdir()
    plan: dict[str, Any] = {
        "fake_result": True,
        "gate_on": ["max_output_tokens=3"],
        "cycles": [1],
        "gate_dir": str(gate),
        "gate_after_result": when == "after-result",
    }
    if mode == "injected-enospc":
        plan["enospc_flag"] = str(small_disk.flag)
    proc, log = start_study(tmp_path, study, out, plan, env=small_disk.env())
    measuring_pid(gate, 1)
    small_disk.fill()
    open_gate(gate, 1)

    assert proc.wait(timeout=120) == 1
    message = log.read_text()
    study_dir = only_study_dir(out)
    error = next(line for line in message.splitlines() if line.startswith("Error: "))
    assert "No space left on device" in error and str(study_dir) in error, message
    assert "Traceback" not in message
    manifest = read_manifest_json(study_dir)  # still valid JSON: the last consistent state
    assert [e["status"] for e in manifest["entries"]] == [
        "completed",
        "running",
        "pending",
        "pending",
    ]
    assert_results_match_manifest(study_dir)
    small_disk.free()

    target = FaultPlan(fake_result=True).target()
    result = StudyRunner(study, results_dir=out, resume_dir=study_dir, worker_target=target).run()

    assert result.status == "completed" and result.counts.completed == 4
    manifest = assert_results_match_manifest(study_dir)
    assert len(result_files(study_dir)) == 4
    entry = manifest["entries"][1]
    if when == "after-result":  # written, never recorded: adopted, not run twice
        assert (entry["adopted"], entry["attempts"]) == (True, 1)
    else:
        assert (entry["adopted"], entry["attempts"]) == (False, 2)


@pytest.mark.parametrize("mode", [MODE])
def test_single_experiment_on_a_full_disk_prints_its_summary(
    tmp_path: Path, small_disk: SmallDisk, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from study_helpers import TINY_BASE
    from typer.testing import CliRunner

    from llenergymeasure.cli.app import app
    from llenergymeasure.testing import inject_enospc

    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(yaml.safe_dump(TINY_BASE))
    out = small_disk.root / "results"
    out.mkdir()
    small_disk.fill()
    if mode == "injected-enospc":
        monkeypatch.setattr(os, "fsync", os.fsync)  # restored after the test
        inject_enospc(small_disk.flag)
    result = CliRunner().invoke(app, ["run", str(experiment), "-o", str(out)])

    assert result.exit_code == 1, result.output
    assert "(completed, config" in result.stdout  # the measurement, in full
    assert "throughput" in result.stdout and "NOT SAVED" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "No space left on device" in last
    assert "result.json" in last and str(out) in last
    assert "Traceback" not in result.output and "OSError" not in result.output
