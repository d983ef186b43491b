"""Shared pieces of the study integration tests: tiny CPU studies and manifest reading."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

import llenergymeasure
from llenergymeasure.config.models import StudyConfig

#: Smallest real experiment: random-weight tiny Llama on CPU, 2 prompts, a few tokens,
#: no warm-up, no idle baseline, no telemetry sampler.
TINY_BASE: dict[str, Any] = {
    "model": "tiny-llama",
    "device": "cpu",
    "precision": "fp32",
    "n": 2,
    "max_input_tokens": 16,
    "max_output_tokens": 3,
    "warmup": {"n_warmup": 0},
    "baseline": {"enabled": False},
    "telemetry": {"enabled": False},
}


def tiny_study(name: str, sweep: dict[str, list[Any]], **execution: Any) -> StudyConfig:
    """A study over ``sweep`` on the tiny CPU base, gaps 0 unless given."""
    return StudyConfig(
        study_name=name, base=dict(TINY_BASE), sweep=sweep, execution=dict(execution)
    )


def only_study_dir(results_dir: Path) -> Path:
    """The single study directory under ``results_dir``."""
    dirs = [p.parent for p in results_dir.glob("*/study_manifest.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_manifest_json(study_dir: Path) -> dict[str, Any]:
    """The manifest as plain JSON."""
    return json.loads((study_dir / "study_manifest.json").read_text())


def subprocess_env() -> dict[str, str]:
    """Environment for a ``python -c`` child that must import this checkout's package."""
    src = str(Path(llenergymeasure.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


# ---- durability tests: a study in its own process, faults from a FaultPlan ----------------
#: Runs a StudyRunner in this process's own session with a FaultPlan (argv: study json,
#: results dir, plan json, [resume dir]); exits like the CLI (128+signal, LLEMError codes)
#: and logs progress messages to stderr, so a test can wait for them.
DURABLE_STUDY = """
import json, sys
from pathlib import Path
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.exceptions import LLEMError
from llenergymeasure.progress import NullProgress
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.study.signals import Interrupted
from llenergymeasure.testing import FaultPlan

class Say(NullProgress):
    def message(self, text):
        print("message:", text, file=sys.stderr, flush=True)
    def experiment_started(self, tick):
        print("started:", tick.index, tick.label, file=sys.stderr, flush=True)

import os
if os.environ.get("ENOSPC_FLAG"):  # a "full disk" in this process too (see inject_enospc)
    from llenergymeasure.testing import inject_enospc
    inject_enospc(os.environ["ENOSPC_FLAG"])
study = StudyConfig.model_validate_json(Path(sys.argv[1]).read_text())
fields = json.loads(sys.argv[3])
plan = FaultPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
resume_dir = Path(sys.argv[4]) if len(sys.argv) > 4 else None
try:
    StudyRunner(study, results_dir=Path(sys.argv[2]), worker_target=plan.target(),
                resume_dir=resume_dir, progress=Say()).run()
except Interrupted as e:
    print(f"interrupted: {e.signum} {e.study_dir}", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
except LLEMError as e:
    print(f"Error: {e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
"""


def start_study(
    work: Path,
    study: StudyConfig,
    results: Path,
    plan: dict[str, Any],
    resume_dir: Path | None = None,
    log_name: str = "study.log",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start DURABLE_STUDY in its own session (a process group a test can signal);
    returns the process and the file its stderr goes to."""
    study_file = work / f"{study.study_name}.json"
    study_file.write_text(study.model_dump_json())
    log = work / log_name
    args = [sys.executable, "-c", DURABLE_STUDY, str(study_file), str(results), json.dumps(plan)]
    if resume_dir is not None:
        args.append(str(resume_dir))
    with log.open("wb") as err:
        proc = subprocess.Popen(
            args, env={**subprocess_env(), **(env or {})}, start_new_session=True, stderr=err
        )
    return proc, log


def wait_until(condition: Any, timeout_s: float = 120.0, what: str = "condition") -> Any:
    """Poll ``condition()`` every 0.05 s until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s} s"
        time.sleep(0.05)


def measuring_pid(gate_dir: Path, position: int, timeout_s: float = 120.0) -> int:
    """Wait for the child of ``position`` to stand at its FaultPlan gate; its pid."""
    found = wait_until(
        lambda: sorted(gate_dir.glob(f"measuring-{position}-*")),
        timeout_s,
        f"experiment {position} measuring",
    )
    return int(found[-1].read_text())


def kill_and_reap(proc: subprocess.Popen[bytes], sig: int, group: bool) -> int:
    """Send ``sig`` to the process alone or to its whole group; its exit status."""
    if group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    return proc.wait(timeout=120)


def assert_gone(pid: int, timeout_s: float = 60.0) -> None:
    """The process ``pid`` exits within ``timeout_s`` (an orphan would not)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout=timeout_s)


def result_files(study_dir: Path) -> dict[Path, dict[str, Any]]:
    """Every result.json under the study dir that records a completed measurement."""
    found = {}
    for path in study_dir.rglob("result.json"):
        data = json.loads(path.read_text())
        if not data.get("failed"):
            found[path.resolve()] = data
    return found


def assert_results_match_manifest(study_dir: Path) -> dict[str, Any]:
    """Every result.json on disk belongs to exactly one manifest entry, and each (config,
    cycle) has at most one: a completed entry's ``result_path``, or - right after a kill,
    before a resume adopts it - the result in a running entry's ``run_dir``."""
    manifest = read_manifest_json(study_dir)
    owned: dict[Path, dict[str, Any]] = {}
    for e in manifest["entries"]:
        if e["status"] == "completed":
            owned[(study_dir / e["result_path"]).resolve()] = e
        elif e.get("run_dir") and (study_dir / e["run_dir"] / "result.json").is_file():
            owned[(study_dir / e["run_dir"] / "result.json").resolve()] = e  # to adopt
    on_disk = result_files(study_dir)
    assert set(owned) == set(on_disk), (sorted(owned), sorted(on_disk))
    keys = [(e["config_hash"], e["cycle"]) for e in owned.values()]
    assert len(keys) == len(set(keys)), keys
    for path, entry in owned.items():
        assert on_disk[path]["config_hash"] == entry["config_hash"]
    return manifest
