"""The function that runs one experiment inside its Slurm job (submitit calls it).

submitit pickles ``run_experiment_job(request)`` at submission and calls it in the job's
Python process on the compute node (the interpreter of the submitting process, or
``slurm.python``). It runs the experiment in that process through the orchestrator, exactly
as a local study child does, so the result lands in the shared study directory in the same
layout as a local run (``<study_dir>/<experiment>_<timestamp>/result.json``, written
atomically), then returns a small `JobReport` that submitit pickles for the study process.
The result records the node and ``CUDA_VISIBLE_DEVICES`` Slurm set (``placement``).

A raised error (a failed experiment: the orchestrator has written a failed result.json
next to its traceback) goes into submitit's error pickle; the study records it as FAILED.
SIGTERM does not reach Python here (submitit ignores it; SIGKILL follows after Slurm's
KillWait), and submitit's USR2 handler interrupts the experiment wherever it is: nothing
here relies on clean-up at a cancel or a time limit. A job requeued after preemption
runs this function again from the start; what the cut-short run left in the run directory
(the study runner made it before submitting) is moved aside to ``<run dir>.restart-<n>``
first, so the result is measured afresh and nothing is overwritten.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llenergymeasure.study.worker import ResultSummary, WorkerRequest


@dataclass(frozen=True)
class JobReport:
    """What a finished job returns to the study process (through the result pickle)."""

    result_path: str  # absolute, on the shared file system
    summary: ResultSummary
    host: str = ""
    cuda_visible_devices: str | None = None
    environ: dict[str, str] = field(default_factory=dict)  # SLURM_JOB_ID, SLURM_JOB_GPUS...
    started_at: datetime | None = None  # the experiment's (from its result)
    ended_at: datetime | None = None

    @property
    def gpus(self) -> frozenset[str]:
        """The node's GPUs this job had: SLURM_JOB_GPUS (node indices), else
        CUDA_VISIBLE_DEVICES; empty when unknown."""
        text = (
            self.environ.get("SLURM_JOB_GPUS")
            or self.environ.get("SLURM_STEP_GPUS")
            or self.cuda_visible_devices
            or ""
        )
        return frozenset(g.strip() for g in text.split(",") if g.strip())


_REPORTED_ENV = ("SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_RESTART_COUNT")


def run_experiment_job(request: WorkerRequest) -> JobReport:
    """Measure one experiment in this (Slurm job) process; the report for the study."""
    from llenergymeasure.progress import NullProgress
    from llenergymeasure.study.worker import result_summary, run_real_experiment

    if request.verbosity is not None:
        from llenergymeasure.logging import setup_logging

        setup_logging(request.verbosity)
    if request.run_dir is not None:
        _fresh_run_dir(Path(request.run_dir))
    result, path = run_real_experiment(request, NullProgress())
    return JobReport(
        result_path=str(Path(path).resolve()),
        summary=result_summary(result),
        host=socket.gethostname(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        environ={k: os.environ[k] for k in _REPORTED_ENV if k in os.environ},
        started_at=result.started_at,
        ended_at=result.ended_at,
    )


def _fresh_run_dir(run_dir: Path) -> None:
    """The run directory, empty: a requeued job's earlier, cut-short files moved aside."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        for n in range(1, 1000):
            aside = run_dir.with_name(f"{run_dir.name}.restart-{n}")
            if not aside.exists():
                os.replace(run_dir, aside)
                break
    run_dir.mkdir(parents=True, exist_ok=True)
