"""The Slurm executor against FakeSlurm on a ManualClock: order, per-GPU parallelism and
gaps, outcome mapping, resume (re-attach, never a second job), --retry-failed. Instant."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.models import StudyConfig
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FakeJob, FakeSlurm, ManualClock

BASE: dict[str, Any] = {"model": "tiny-llama", "device": "cpu", "n": 2}


def study(
    *,
    cycles: int = 2,
    parallel: int = 1,
    config_gap: float = 0.0,
    cycle_gap: float = 0.0,
    max_failures: int = 10,
    **slurm: Any,
) -> StudyConfig:
    """A 2x2 sweep on Slurm; gaps and parallelism as given."""
    return StudyConfig(
        study_name="fake",
        base=dict(BASE),
        sweep={"pytorch.batch_size": [1, 2], "max_output_tokens": [3, 4]},
        execution={
            "executor": "slurm",
            "n_cycles": cycles,
            "config_gap_seconds": config_gap,
            "cycle_gap_seconds": cycle_gap,
            "max_consecutive_failures": max_failures,
        },
        slurm={"max_parallel": parallel, "poll_interval_s": 1.0, "cpus_per_job": 1, **slurm},
    )


def run(
    cfg: StudyConfig,
    tmp: Path,
    fake: FakeSlurm | None = None,
    clock: ManualClock | None = None,
    **kwargs: Any,
) -> tuple[Any, FakeSlurm, Path]:
    clock = clock or ManualClock()
    fake = fake or FakeSlurm(clock, tmp / "jobs" / "%j", n_gpus=2, duration_s=10.0)
    runner = StudyRunner(cfg, results_dir=tmp / "out", job_system=fake, time_source=clock, **kwargs)
    result = runner.run()
    return result, fake, Path(result.study_dir)


def manifest(study_dir: Path) -> dict[str, Any]:
    return json.loads((study_dir / "study_manifest.json").read_text())


def ordered(fake: FakeSlurm) -> list[FakeJob]:
    return sorted(fake.jobs.values(), key=lambda j: int(j.job_id))


def test_max_parallel_1_runs_in_run_order_one_at_a_time_with_gaps(tmp_path: Path) -> None:
    result, fake, study_dir = run(study(config_gap=5.0, cycle_gap=30.0), tmp_path)

    assert result.status == "completed" and result.counts.completed == 8
    jobs = ordered(fake)
    assert [j.request.position for j in jobs] == list(range(8))
    for a, b in itertools.pairwise(jobs):
        assert a.end_s is not None and b.start_s is not None
        gap = 30.0 if b.request.cycle != a.request.cycle else 5.0
        assert b.start_s - a.end_s >= gap  # one at a time, the gap honoured
        assert b.start_s - a.end_s <= gap + 1.0  # and not much more (poll period 1 s)
    entries = manifest(study_dir)["entries"]
    assert all(len(e["slurm_jobs"]) == 1 for e in entries)
    job = entries[0]["slurm_jobs"][0]
    assert job["state"] == "COMPLETED" and job["node"] == "fakenode"
    assert job["cuda_visible_devices"] in ("0", "1")
    assert job["stdout"].endswith(f"{job['job_id']}_0_log.out")
    assert result.timing.gap_s >= 6 * 5.0 + 30.0


def test_max_parallel_2_never_two_on_one_gpu_and_each_gpu_rests_the_gap(
    tmp_path: Path,
) -> None:
    result, fake, _ = run(study(parallel=2, config_gap=4.0, cycle_gap=4.0), tmp_path)

    assert result.counts.completed == 8
    jobs = ordered(fake)
    assert [j.request.position for j in jobs] == list(range(8))  # submitted in run order
    overlapping = [
        (a, b)
        for a, b in itertools.combinations(jobs, 2)
        if a.start_s is not None
        and b.start_s is not None
        and a.end_s is not None
        and b.end_s is not None
        and a.start_s < b.end_s
        and b.start_s < a.end_s
    ]
    assert overlapping, "with two GPUs and max_parallel 2, two experiments ran at once"
    for a, b in overlapping:
        assert set(a.gpus).isdisjoint(b.gpus)
    for gpu in (0, 1):
        on_gpu = sorted((j for j in jobs if gpu in j.gpus), key=lambda j: j.start_s or 0)
        for a, b in itertools.pairwise(on_gpu):
            assert (b.start_s or 0) - (a.end_s or 0) >= 4.0


def test_a_cluster_that_shares_gpus_is_flagged(tmp_path: Path) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j", n_gpus=2, share_gpus=True)
    result, _, _ = run(study(parallel=2, cycles=1), tmp_path, fake, clock)
    shared = [w for w in result.warnings if "ran at the same time on GPU 0" in w]
    assert shared, result.warnings


def test_no_gpu_sharing_warning_when_slurm_keeps_gpus_apart(tmp_path: Path) -> None:
    result, _, _ = run(study(parallel=2, cycles=1), tmp_path)
    assert not [w for w in result.warnings if "same time" in w]


def test_three_gpus_never_more_than_max_parallel(tmp_path: Path) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j", n_gpus=3)
    run(study(parallel=2), tmp_path, fake, clock)
    starts = sorted((j.start_s or 0, j.end_s or 0) for j in fake.jobs.values())
    for t, _ in starts:
        assert sum(1 for s, e in starts if s <= t < e) <= 2


@pytest.mark.parametrize(
    ("fate", "state", "words"),
    [
        ("raise", "FAILED", "InjectedFault: injected failure"),
        ("usr2", "TIMEOUT", "stopped by submitit's USR2 90 s before --time=2"),
        ("timeout", "TIMEOUT", "past its time limit"),
        ("cancel", "CANCELLED", "exit code 0:0"),
        ("oom", "OUT_OF_MEMORY", "sacct: FAILED, exit code 0:9"),
        ("node_fail", "NODE_FAIL", "its node failed"),
    ],
)
def test_a_failed_job_is_a_failed_entry_with_slurms_reason(
    tmp_path: Path, fate: str, state: str, words: str
) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j", fates={"batch_size=2": fate})
    result, _, study_dir = run(study(cycles=1, time_limit_min=2), tmp_path, fake, clock)

    assert result.status == "failed"
    assert result.counts.completed == 2 and result.counts.failed == 2
    failed = [e for e in manifest(study_dir)["entries"] if e["status"] == "failed"]
    for e in failed:
        job = e["slurm_jobs"][-1]
        assert e["error"].startswith(f"Slurm job {job['job_id']} {state}"), e["error"]
        assert words in e["error"], e["error"]
        assert job["state"] == state
        text = (study_dir / e["failure_path"]).read_text()
        assert f"slurm job: {job['job_id']}" in text and "logs (kept):" in text


def test_failed_entries_stay_failed_on_resume_and_rerun_with_retry_failed(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j", fates={"batch_size=2": "usr2"})
    cfg = study(cycles=1)
    first, _, study_dir = run(cfg, tmp_path, fake, clock)
    assert first.counts.failed == 2 and len(fake.jobs) == 4

    again, _, _ = run(cfg, tmp_path, fake, clock, resume=True)
    assert again.study_dir == str(study_dir)
    assert len(fake.jobs) == 4  # nothing submitted: failed entries are kept
    assert again.counts.failed == 2

    fake.fates.clear()
    retried, _, _ = run(cfg, tmp_path, fake, clock, resume=True, retry_failed=True)
    assert retried.status == "completed" and retried.counts.completed == 4
    assert len(fake.jobs) == 6  # exactly the two failed ones again
    entries = manifest(study_dir)["entries"]
    attempts = {e["label"]: [j["state"] for j in e["slurm_jobs"]] for e in entries}
    assert sorted(map(len, attempts.values())) == [1, 1, 2, 2]
    assert all(s in (["COMPLETED"], ["TIMEOUT", "COMPLETED"]) for s in attempts.values())


class Killed(KeyboardInterrupt):
    """Stands in for the study process dying mid-study."""


def test_study_process_stopped_then_resumed_submits_nothing_twice(tmp_path: Path) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j", duration_s=10.0)
    cfg = study(parallel=2)

    class Dying(ManualClock):
        """Dies on the wait after two jobs have ended and while two run."""

        def __init__(self) -> None:
            super().__init__()
            self.t_s = clock.t_s

        def sleep(self, dt_s: float) -> None:
            clock.advance(dt_s)
            self.t_s = clock.t_s
            ended = sum(j.end_s is not None for j in fake.jobs.values())
            if ended >= 2 and len(fake.jobs) == 4:
                raise Killed

    with pytest.raises(KeyboardInterrupt):  # the runner may re-raise it as Interrupted
        StudyRunner(cfg, results_dir=tmp_path / "out", job_system=fake, time_source=Dying()).run()
    study_dir = next((tmp_path / "out").glob("fake_*"))
    left = manifest(study_dir)
    running = [e for e in left["entries"] if e["status"] == "running"]
    assert len(running) == 2 and all(e["slurm_jobs"][0]["job_id"] for e in running)
    clock.advance(100.0)  # the jobs go on without the study process and end

    result, _, _ = run(cfg, tmp_path, fake, clock, resume=True)
    assert result.status == "completed" and result.counts.completed == 8
    assert len(fake.jobs) == 8  # one job per (config, cycle), none twice
    names = [j.name for j in fake.jobs.values()]
    assert len(set(names)) == 8
    entries = manifest(study_dir)["entries"]
    assert all(len(e["slurm_jobs"]) == 1 for e in entries)
    assert len({e["result_path"] for e in entries}) == 8


def test_a_job_whose_id_was_never_recorded_is_found_by_name(tmp_path: Path) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j")
    cfg = study(cycles=1)
    _, _, study_dir = run(cfg, tmp_path, fake, clock)
    # Make entry 0 look as if the study died between sbatch and writing the job id.
    data = manifest(study_dir)
    entry = data["entries"][0]
    entry["status"], entry["result_path"] = "running", None
    entry["slurm_jobs"][0]["job_id"] = None
    data["status"] = "running"
    (study_dir / "study_manifest.json").write_text(json.dumps(data))

    again, _, _ = run(cfg, tmp_path, fake, clock, resume_dir=study_dir)
    assert again.status == "completed"
    assert len(fake.jobs) == 4  # found by its name: not submitted again
    assert manifest(study_dir)["entries"][0]["slurm_jobs"][0]["job_id"] == "100"


def test_an_entry_marked_running_whose_job_never_existed_is_submitted(tmp_path: Path) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j")
    cfg = study(cycles=1)
    _, _, study_dir = run(cfg, tmp_path, fake, clock)
    data = manifest(study_dir)
    entry = data["entries"][1]
    entry["status"], entry["result_path"] = "running", None
    entry["slurm_jobs"][0]["job_id"] = None
    entry["slurm_jobs"][0]["name"] = "never-submitted"
    (study_dir / "study_manifest.json").write_text(json.dumps(data))

    again, _, _ = run(cfg, tmp_path, fake, clock, resume_dir=study_dir)
    assert again.status == "completed" and len(fake.jobs) == 5
    assert [j["job_id"] for j in manifest(study_dir)["entries"][1]["slurm_jobs"]] == ["104"]


def test_consecutive_failures_stop_submitting_but_running_jobs_finish(tmp_path: Path) -> None:
    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j", fates={"batch_size": "raise"})
    result, _, _ = run(study(cycles=2, max_failures=2), tmp_path, fake, clock)
    assert result.status == "stopped"
    assert len(fake.jobs) == 2 and result.counts.failed == 2


def test_resuming_slurm_jobs_with_the_local_executor_is_refused(tmp_path: Path) -> None:
    from llenergymeasure.exceptions import StudyError

    clock = ManualClock()
    fake = FakeSlurm(clock, tmp_path / "jobs" / "%j")
    cfg = study(cycles=1)
    _, _, study_dir = run(cfg, tmp_path, fake, clock)
    data = manifest(study_dir)
    data["entries"][0]["status"] = "running"
    (study_dir / "study_manifest.json").write_text(json.dumps(data))
    local = cfg.model_copy(
        update={"execution": cfg.execution.model_copy(update={"executor": "local"})}
    )
    with pytest.raises(StudyError, match=r"execution\.executor: slurm"):
        StudyRunner(local, results_dir=tmp_path / "out", resume_dir=study_dir).run()


def test_a_docker_runner_is_not_applied_on_slurm_and_says_so(tmp_path: Path) -> None:
    from llenergymeasure.config.user_config import UserConfig

    uc = UserConfig(runners={"pytorch": "docker:llem:pytorch"})
    result, _, _ = run(study(cycles=1), tmp_path, user_config=uc)
    assert result.status == "completed"
    assert any("not applied by the Slurm executor" in w for w in result.warnings)
