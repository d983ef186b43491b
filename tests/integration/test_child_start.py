"""How experiment children start (study.child): forked from a study's fork server that has
imported the frameworks, or spawned; either way a process of its own that takes the study's
environment as it is when the experiment starts, dies with the study, and leaves no server
behind. Real processes (a target that writes what it sees to a file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.study import child
from llenergymeasure.study.worker import WorkerRequest

pytestmark = pytest.mark.slow


def _observe(request: WorkerRequest, conn: Any) -> None:
    """Child target: write what this process sees, then exit without a report."""
    seen = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "marker": os.environ.get("LLEM_TEST_CHILD_MARKER"),
        "torch_imported": "torch" in sys.modules,
        "orchestrator_imported": "llenergymeasure.orchestration.orchestrator" in sys.modules,
        "cwd": os.getcwd(),
    }
    (request.results_dir / f"seen-{request.position}.json").write_text(json.dumps(seen))


def _run(tmp_path: Path, position: int) -> dict[str, Any]:
    request = WorkerRequest(
        config=ExperimentConfig(model="tiny-llama"), results_dir=tmp_path, position=position
    )
    outcome = child.run_child(_observe, request, 120.0, lambda _m: None)
    assert not outcome.ok and "without reporting" in (outcome.detail or "")
    data: dict[str, Any] = json.loads((tmp_path / f"seen-{position}.json").read_text())
    return data


def test_start_method_default_and_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(child.CHILD_START_ENV, raising=False)
    expected = "forkserver" if sys.platform.startswith("linux") else "spawn"
    assert child.start_method() == expected
    monkeypatch.setenv(child.CHILD_START_ENV, "spawn")
    assert child.start_method() == "spawn"
    monkeypatch.setenv(child.CHILD_START_ENV, "fork")
    with pytest.raises(ValueError, match=r"LLEM_CHILD_START='fork'.*forkserver, spawn"):
        child.start_method()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork server: Linux")
def test_forked_children_have_the_frameworks_and_the_study_environment_of_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    monkeypatch.delenv(child.CHILD_START_ENV, raising=False)
    monkeypatch.setenv("LLEM_TEST_CHILD_MARKER", "first")
    first = _run(tmp_path, 0)
    monkeypatch.setenv("LLEM_TEST_CHILD_MARKER", "second")  # after the server started
    monkeypatch.chdir(tmp_path)
    second = _run(tmp_path, 1)
    try:
        assert first["marker"] == "first" and second["marker"] == "second"
        assert first["torch_imported"] and second["torch_imported"]  # preloaded, not imported
        assert first["orchestrator_imported"] and second["orchestrator_imported"]
        assert first["ppid"] == second["ppid"] != os.getpid()  # one server forked both
        assert first["pid"] != second["pid"]  # a process of its own each
        assert second["cwd"] == str(tmp_path)
        server = psutil.Process(first["ppid"])
        assert "forkserver" in " ".join(server.cmdline())
    finally:
        child.stop_fork_server()
    assert not psutil.pid_exists(first["ppid"]) or psutil.Process(first["ppid"]).status() in (
        psutil.STATUS_ZOMBIE,
        psutil.STATUS_DEAD,
    )


def test_spawned_children_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(child.CHILD_START_ENV, "spawn")
    seen = _run(tmp_path, 0)
    assert seen["ppid"] == os.getpid()
    assert not seen["torch_imported"]  # a fresh interpreter that imported nothing heavy
    assert not seen["orchestrator_imported"]


_RUN_IMPORTS = """
import json, sys, tempfile
from pathlib import Path
import llenergymeasure.study.forkserver_init, llenergymeasure.study.forkserver_frameworks
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.orchestration.orchestrator import run_single_experiment
config = ExperimentConfig(  # built by the study process; a child gets it unpickled
    model="tiny-llama", weights="random", device="cpu", n=4, max_input_tokens=16,
    max_output_tokens=4, warmup={"n_warmup": 1}, baseline={"enabled": False},
)
before = set(sys.modules)
run_single_experiment(config, None, Path(tempfile.mkdtemp()))
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("llenergymeasure"))))
"""


def test_a_run_imports_none_of_llems_modules_beyond_the_fork_servers_preload(
    tmp_path: Path,
) -> None:
    """What the fork server imports (study.forkserver_frameworks.RUN_MODULES) covers what an
    experiment run imports lazily, so that no forked child imports llem's modules again (on
    the H200 VM that import took 0.65-0.7 s per child). The CPU path only: the GPU-only
    modules (NVML meters) are listed too but a CPU run cannot reach them."""
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, "-c", _RUN_IMPORTS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == []
