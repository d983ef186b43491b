"""Studies through the Slurm executor on a real single-node Slurm (conftest.py starts it):
the same results as locally, two experiments at once on different GPUs, scancel, the study
process killed and resumed, a time limit and --retry-failed.

Tiny CPU experiments (random-weight tiny Llama, 2 prompts, 4 tokens, no warm-up, no
baseline, no sampler); each job gets 1 of the 2 fake GPUs and 1 of the 2 CPUs, so at most
two run at once. sacct is polled every second.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import llenergymeasure
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.results.persistence import read_result
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FaultPlan, fault_injecting_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

TINY: dict[str, Any] = {
    "model": "tiny-llama",
    "device": "cpu",
    "precision": "fp32",
    "n": 2,
    "max_input_tokens": 16,
    "max_output_tokens": 4,
    "warmup": {"n_warmup": 0},
    "baseline": {"enabled": False},
    "telemetry": {"enabled": False},
}
SLURM: dict[str, Any] = {"gpus_per_job": 1, "cpus_per_job": 1, "poll_interval_s": 1.0}
WAIT_S = 300.0  # the longest any test waits for a condition


def study(
    name: str,
    sweep: dict[str, list[Any]],
    *,
    cycles: int = 1,
    executor: str = "slurm",
    **slurm: Any,
) -> StudyConfig:
    """A tiny study; a unique name so that sacct's job names are this test's own."""
    return StudyConfig(
        study_name=f"{name}-{uuid.uuid4().hex[:6]}",
        base=dict(TINY),
        sweep=sweep,
        execution={
            "executor": executor,
            "n_cycles": cycles,
            "config_gap_seconds": 0,
            "cycle_gap_seconds": 0,
            "experiment_timeout_seconds": 300,
        },
        slurm={**SLURM, **slurm},
    )


def manifest(study_dir: Path) -> dict[str, Any]:
    return json.loads((study_dir / "study_manifest.json").read_text())


def results(study_dir: Path) -> dict[tuple[str, int], ExperimentResult]:
    """Completed results by (config hash, cycle), read from the manifest's paths."""
    out = {}
    for e in manifest(study_dir)["entries"]:
        if e["status"] == "completed":
            out[(e["config_hash"], e["cycle"])] = read_result(study_dir / e["result_path"])
    return out


def sacct_jobs(prefix: str) -> list[tuple[str, str]]:
    """(job id, job name) of every job whose name starts with ``prefix`` (today)."""
    done = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-S", "now-1day", "-o", "JobIDRaw,JobName%200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("|") for line in done.stdout.splitlines() if "|" in line]
    return [(r[0], r[1]) for r in rows if r[1].startswith(prefix)]


def sacct_jobs_once_recorded(prefix: str, expected: int) -> list[tuple[str, str]]:
    """``sacct_jobs`` once slurmdbd holds at least ``expected`` of them.

    slurmctld hands job records to slurmdbd through an asynchronous agent queue, so a job
    that has finished can be missing from ``sacct`` for a few seconds (CI saw 7 of 8). Wait
    for the count to reach ``expected``; the caller still asserts it is exactly that, so a
    job submitted twice fails the test.
    """
    deadline = time.monotonic() + 60.0
    jobs = sacct_jobs(prefix)
    while len(jobs) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        jobs = sacct_jobs(prefix)
    return jobs


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll ``check`` (every 0.5 s, bounded) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def study_dir_of(out: Path) -> Path | None:
    found = list(out.glob("*/study_manifest.json"))
    return found[0].parent if found else None


def entries_where(out: Path, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    d = study_dir_of(out)
    if d is None:
        return []
    try:
        return [e for e in manifest(d)["entries"] if pred(e)]
    except (OSError, ValueError):
        return []


def overlap(a: ExperimentResult, b: ExperimentResult) -> bool:
    assert a.ended_at is not None and b.ended_at is not None
    return a.started_at < b.ended_at and b.started_at < a.ended_at


def most_at_once(runs: list[ExperimentResult]) -> int:
    """The most experiments running at one instant (an end before a start at a tie)."""
    edges = sorted(
        [(r.started_at, 1) for r in runs] + [(r.ended_at, -1) for r in runs if r.ended_at],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


# ---- 1 + 2: the same 8 results as locally; two at once on different GPUs ------------------
def test_2x2_sweep_2_cycles_on_slurm_gives_the_local_results_two_at_a_time(
    tmp_path: Path,
) -> None:
    sweep = {"pytorch.batch_size": [1, 2], "max_output_tokens": [3, 4]}
    on_slurm = study("same", sweep, cycles=2, max_parallel=2)
    local = on_slurm.model_copy(
        update={"execution": on_slurm.execution.model_copy(update={"executor": "local"})}
    )
    # The local study runs alongside (in a thread): it uses the core the jobs leave idle.
    local_results: list[Any] = []
    local_thread = threading.Thread(
        target=lambda: local_results.append(
            StudyRunner(local, results_dir=tmp_path / "local").run()
        ),
        daemon=True,
    )
    t0 = time.monotonic()
    local_thread.start()
    slurm_result = StudyRunner(on_slurm, results_dir=tmp_path / "slurm").run()
    slurm_s = time.monotonic() - t0
    local_thread.join(WAIT_S)
    assert local_results, "the local study did not finish"
    local_result = local_results[0]
    print(f"slurm study: {slurm_s:.1f} s, both: {time.monotonic() - t0:.1f} s")

    assert slurm_result.status == local_result.status == "completed"
    slurm_dir, local_dir = Path(slurm_result.study_dir), Path(local_result.study_dir)
    got, want = results(slurm_dir), results(local_dir)
    assert len(got) == 8 and set(got) == set(want)
    for key, r in got.items():
        mine = want[key]
        assert r.config == mine.config and r.config_hash == mine.config_hash
        assert r.metrics is not None and mine.metrics is not None
        assert r.metrics.tokens.output_tokens == mine.metrics.tokens.output_tokens
        assert r.metrics.tokens.input_tokens == mine.metrics.tokens.input_tokens
        assert not r.failed
        # the same layout: <study dir>/<experiment>_<timestamp>/result.json
        assert Path(r.run_dir or "").parent.resolve() == slurm_dir.resolve()
        assert r.placement is not None and r.placement.scheduler == "slurm"
        assert r.placement.cuda_visible_devices in ("0", "1") and r.placement.host
        assert mine.placement is not None and mine.placement.scheduler is None
    names = sorted(p.name for p in slurm_dir.iterdir())
    assert {"slurm", "study_manifest.json", "study_summary.json"} <= set(names)

    entries = manifest(slurm_dir)["entries"]
    assert [len(e["slurm_jobs"]) for e in entries] == [1] * 8
    job_ids = {e["slurm_jobs"][0]["job_id"] for e in entries}
    assert len(job_ids) == 8
    assert len(sacct_jobs_once_recorded(f"llem-{slurm_dir.name}-", 8)) == 8

    runs = list(got.values())
    pairs = [(a, b) for a, b in itertools.combinations(runs, 2) if overlap(a, b)]
    assert pairs, "no two experiments ran at the same time"
    for a, b in pairs:
        assert a.placement and b.placement
        assert a.placement.cuda_visible_devices != b.placement.cuda_visible_devices
    assert most_at_once(runs) == 2  # max_parallel: a long run may overlap two in turn


# ---- 3: scancel ---------------------------------------------------------------------------
def test_scancel_of_one_job_is_a_failed_entry_with_slurms_reason(tmp_path: Path) -> None:
    cfg = study("cancel", {"max_output_tokens": [2, 3, 4]}, max_parallel=2)
    faults = FaultPlan(hang_on=("max_output_tokens=3",), hang_s=600)
    job_fn = functools.partial(fault_injecting_job, faults=faults)
    out = tmp_path / "out"
    cancelled: list[str] = []

    def cancel_the_hanging_job() -> None:
        def running_job() -> str | None:
            for e in entries_where(out, lambda e: "max_output_tokens=3" in e["label"]):
                job = e["slurm_jobs"][-1] if e["slurm_jobs"] else {}
                if job.get("state") == "RUNNING":
                    return str(job["job_id"])
            return None

        job_id = wait_for("the hanging job to run", running_job, 180)
        subprocess.run(["scancel", job_id], check=True, timeout=60)
        cancelled.append(job_id)

    canceller = threading.Thread(target=cancel_the_hanging_job, daemon=True)
    canceller.start()
    result = StudyRunner(cfg, results_dir=out, job_function=job_fn).run()
    canceller.join(10)

    assert cancelled, "the test never saw the job running"
    assert result.status == "failed"
    assert result.counts.completed == 2 and result.counts.failed == 1
    study_dir = Path(result.study_dir)
    [failed] = [e for e in manifest(study_dir)["entries"] if e["status"] == "failed"]
    job = failed["slurm_jobs"][-1]
    assert job["job_id"] == cancelled[0] and job["state"] == "CANCELLED"
    assert failed["error"].startswith(f"Slurm job {cancelled[0]} CANCELLED (exit code ")
    assert (study_dir / job["stdout"]).is_file() and (study_dir / job["stderr"]).is_file()
    text = (study_dir / failed["failure_path"]).read_text()
    assert "state CANCELLED" in text and "logs (kept)" in text


# ---- 4: the study process killed mid-study, then resumed ----------------------------------
RUN_STUDY = """
import sys
from pathlib import Path
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.study.runner import StudyRunner
study = StudyConfig.model_validate_json(Path(sys.argv[1]).read_text())
StudyRunner(study, results_dir=Path(sys.argv[2])).run()
"""


def test_study_process_killed_then_resumed_submits_nothing_twice(tmp_path: Path) -> None:
    cfg = study("kill", {"max_output_tokens": [3, 4]}, cycles=2, max_parallel=2)
    study_file, out = tmp_path / "study.json", tmp_path / "out"
    study_file.write_text(cfg.model_dump_json())
    src = str(Path(llenergymeasure.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_STUDY, str(study_file), str(out)],
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(
            "one experiment completed and one running",
            lambda: (
                entries_where(out, lambda e: e["status"] == "completed")
                and entries_where(out, lambda e: e["status"] == "running" and e["slurm_jobs"])
            ),
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the study process dies; its jobs do not
        proc.wait(timeout=60)
    study_dir = study_dir_of(out)
    assert study_dir is not None
    before = {p: p.read_bytes() for p in study_dir.rglob("result.json")}
    killed = manifest(study_dir)
    assert killed["status"] == "running"
    running = [e["slurm_jobs"][-1] for e in killed["entries"] if e["status"] == "running"]
    live = {j["job_id"] for j in running if j["job_id"]}  # None: killed during its sbatch

    result = StudyRunner(cfg, results_dir=out, resume=True).run()

    assert result.status == "completed" and result.counts.completed == 4
    entries = manifest(study_dir)["entries"]
    assert all(len(e["slurm_jobs"]) == 1 for e in entries)
    assert {e["slurm_jobs"][0]["job_id"] for e in entries} >= live  # re-attached
    # nothing submitted twice
    assert len(sacct_jobs_once_recorded(f"llem-{study_dir.name}-", 4)) == 4
    assert len({e["result_path"] for e in entries}) == 4
    for path, data in before.items():  # nothing lost or rewritten
        assert path.read_bytes() == data
    assert len(list(study_dir.rglob("result.json"))) == 4


# ---- 5: a job past its time limit, then --retry-failed ------------------------------------
def test_a_job_past_its_time_limit_is_recorded_and_rerun_on_retry_failed(
    tmp_path: Path,
) -> None:
    # --time=1: submitit's USR2 (90 s before the limit) arrives within ~30 s of the start
    # and stops the hanging job: TIMEOUT, bounded by the minute of the limit.
    cfg = study("limit", {"max_output_tokens": [3]}, time_limit_min=1)
    hang = functools.partial(
        fault_injecting_job, faults=FaultPlan(hang_on=("model=tiny-llama",), hang_s=600)
    )
    out = tmp_path / "out"
    t0 = time.monotonic()
    first = StudyRunner(cfg, results_dir=out, job_function=hang).run()
    print(f"timed out in {time.monotonic() - t0:.1f} s")

    assert first.status == "failed" and first.counts.failed == 1
    study_dir = Path(first.study_dir)
    [entry] = manifest(study_dir)["entries"]
    job = entry["slurm_jobs"][-1]
    assert job["state"] == "TIMEOUT"
    assert entry["error"].startswith(f"Slurm job {job['job_id']} TIMEOUT")
    assert "--time=1" in entry["error"]

    kept = StudyRunner(cfg, results_dir=out, resume=True).run()
    assert kept.counts.failed == 1 and len(manifest(study_dir)["entries"][0]["slurm_jobs"]) == 1

    longer = cfg.model_copy(update={"slurm": cfg.slurm.model_copy(update={"time_limit_min": 5})})
    retried = StudyRunner(longer, results_dir=out, resume=True, retry_failed=True).run()
    assert retried.study_dir == first.study_dir
    assert retried.status == "completed" and retried.counts.completed == 1
    [entry] = manifest(study_dir)["entries"]
    assert [j["state"] for j in entry["slurm_jobs"]] == ["TIMEOUT", "COMPLETED"]
    assert entry["attempts"] == 2
    started = datetime.fromisoformat(entry["slurm_jobs"][1]["submitted_at"])
    assert started > datetime.fromisoformat(job["submitted_at"])


# ---- the whole study inside one allocation: USR1 -> stop, requeue, --resume ---------------
def test_whole_study_in_one_allocation_requeues_itself_on_usr1_and_resumes(
    tmp_path: Path,
) -> None:
    # The local executor inside one job; `scancel --signal=USR1 --batch` stands in for
    # `--signal=B:USR1@300` (which would need a real time limit to come near).
    cfg = study("alloc", {"max_output_tokens": [2, 3, 4]}, executor="local")
    study_file, out, log = tmp_path / "study.yaml", tmp_path / "out", tmp_path / "job.log"
    data = cfg.model_dump(mode="json", exclude={"slurm"})
    study_file.write_text(yaml.safe_dump(data, sort_keys=False))
    llem = Path(sys.executable).with_name("llem")
    command = f"exec {llem} run {study_file} --resume --no-gaps -o {out}"
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--requeue",
            "--open-mode=append",
            f"--output={log}",
            "--cpus-per-task=1",
            "--time=10",
            f"--job-name=llem-{cfg.study_name}",
            "--wrap",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        wait_for(
            "one experiment done", lambda: entries_where(out, lambda e: e["status"] == "completed")
        )
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=60)

        def finished() -> str | None:
            done = subprocess.run(
                ["sacct", "-n", "-P", "-X", "-D", "-j", job_id, "-o", "State"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            states = [s.split()[0] for s in done.stdout.split() if s.strip()]
            if states and states[-1] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
                return ",".join(states)
            return None

        states = wait_for("the requeued job to finish", finished)
    finally:
        subprocess.run(["scancel", job_id], check=False, timeout=60)
    text = log.read_text()
    assert states == "REQUEUED,COMPLETED", (states, text[-3000:])
    assert "interrupted by SIGUSR1" in text.replace("Interrupted", "interrupted"), text[-3000:]
    assert f"requeued Slurm job {job_id}" in text, text[-3000:]
    study_dir = study_dir_of(out)
    assert study_dir is not None
    final = manifest(study_dir)
    assert final["status"] == "completed" and final["sessions"] >= 2
    assert [e["status"] for e in final["entries"]] == ["completed"] * 3
