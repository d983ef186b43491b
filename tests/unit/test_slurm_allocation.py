"""study.allocation: the Slurm job id of this process and requeueing it."""

from __future__ import annotations

from llenergymeasure.study import allocation


def test_slurm_job_id_only_inside_a_job() -> None:
    assert allocation.slurm_job_id({"SLURM_JOB_ID": "42"}) == "42"
    assert allocation.slurm_job_id({}) is None
    assert allocation.slurm_job_id({"SLURM_JOB_ID": ""}) is None


def test_requeue_without_scontrol_says_why(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", "/nonexistent")
    assert allocation.requeue_self("42") == "scontrol not found on PATH"


def test_sigusr1_stops_a_study_only_inside_a_slurm_job(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import signal

    from llenergymeasure.study.signals import stop_signals

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert signal.SIGUSR1 not in stop_signals()
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert signal.SIGUSR1 in stop_signals() and signal.SIGTERM in stop_signals()
