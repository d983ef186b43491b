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
