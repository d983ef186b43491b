"""submitit, behind one small interface (`JobSystem`) so the executor can be tested without
a cluster (a fake in ``llenergymeasure.testing``) and submitit stays an optional extra.

`SubmititJobs` submits with ``submitit.SlurmExecutor`` (one ``sbatch`` per experiment),
finds a job's files by id (``<study_dir>/slurm/<id>/``: the sbatch script, the pickled
call, ``<id>_0_log.out``/``.err``, ``<id>_0_result.pkl``), reads the result pickle, and
cancels with ``scancel``. States come from our own ``sacct`` call (`sacct.query`), not
from submitit's watcher, whose back-off grows to 10 minutes. Re-attaching after a restart
needs only the folder and the job id.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from llenergymeasure.config.ssot import EXECUTOR_EXTRAS
from llenergymeasure.exceptions import ExtraNotInstalledError, StudyError
from llenergymeasure.study.slurm import sacct
from llenergymeasure.study.slurm.sacct import SacctRecord

SCANCEL_TIMEOUT_S = 60.0
LOG_TAIL_CHARS = 6000


class SubmitError(StudyError):
    """sbatch refused a job; the message carries sbatch's own error."""


@dataclass(frozen=True)
class JobFiles:
    """A job's files in its submitit folder."""

    folder: Path
    stdout: Path
    stderr: Path
    result_pickle: Path
    submission: Path


#: The job function: (request) -> report, picklable (a module-level function or a partial).
JobFunction = Callable[[Any], Any]


class JobSystem(Protocol):
    """What the Slurm executor needs from the cluster."""

    def submit(self, fn: JobFunction, request: Any, params: dict[str, Any]) -> str:
        """Submit ``fn(request)`` as one job with these sbatch parameters; its job id."""

    def states(self, job_ids: Collection[str]) -> dict[str, SacctRecord]:
        """sacct's record of each job it knows (SacctError when sacct fails)."""

    def find(self, job_name: str, since_unix_s: float) -> list[str]:
        """Ids of jobs named ``job_name`` submitted since then (finds an unrecorded job)."""

    def result(self, job_id: str) -> tuple[str, Any] | None:
        """``("success", value)`` / ``("error", trace)`` from the result pickle, or None."""

    def cancel(self, job_id: str) -> None:
        """scancel it (a finished job is fine)."""

    def files(self, job_id: str) -> JobFiles:
        """Where its files are."""


def require_submitit() -> ModuleType:
    """``import submitit``, or ExtraNotInstalledError with the install command."""
    try:
        import submitit
    except ImportError as e:
        module, hint = EXECUTOR_EXTRAS["slurm"]
        raise ExtraNotInstalledError(f"execution.executor: slurm needs {module} -> {hint}") from e
    return submitit


class SubmititJobs:
    """`JobSystem` on a real cluster, through submitit (see the module docstring)."""

    def __init__(self, folder: Path, python: str | None = None) -> None:
        self.folder = Path(folder)  # with %j: <study_dir>/slurm/%j
        self.python = python
        self._submitit = require_submitit()
        for tool in ("sbatch", "sacct", "squeue", "scancel"):
            if shutil.which(tool) is None:
                raise StudyError(
                    f"{tool} not found on PATH: execution.executor: slurm runs on a Slurm "
                    "login or compute node (with sbatch, sacct, squeue and scancel)"
                )
        self._executor: Any = None

    def _slurm_executor(self) -> Any:
        if self._executor is None:
            kwargs = {"python": self.python} if self.python else {}
            self._executor = self._submitit.SlurmExecutor(folder=str(self.folder), **kwargs)
        return self._executor

    def submit(self, fn: JobFunction, request: Any, params: dict[str, Any]) -> str:
        """One ``sbatch``; SubmitError with sbatch's message when it refuses."""
        executor = self._slurm_executor()
        executor.update_parameters(**params)
        try:
            job = executor.submit(fn, request)
        except self._submitit.core.utils.FailedJobError as e:
            raise SubmitError(f"sbatch refused the job: {str(e).strip()[:600]}") from e
        return str(job.job_id)

    def states(self, job_ids: Collection[str]) -> dict[str, SacctRecord]:
        """One sacct call for all of them."""
        return sacct.query(job_ids)

    def find(self, job_name: str, since_unix_s: float) -> list[str]:
        """Jobs named ``job_name``: ``squeue`` (slurmctld knows a job the moment sbatch
        made it) and ``sacct`` since then (a job that already ended; accounting can lag
        a submission by a second or more). Sorted by id, each once."""
        import time

        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since_unix_s - 120))
        found = _ids(["squeue", "-h", f"--name={job_name}", "-o", "%i"], "squeue")
        found |= _ids(
            ["sacct", "-n", "-P", "-X", "-o", "JobIDRaw", f"--name={job_name}", "-S", start],
            "sacct",
        )
        return sorted(found, key=lambda i: (len(i), i))

    def result(self, job_id: str) -> tuple[str, Any] | None:
        """The result pickle's content, once it exists (submitit writes it atomically)."""
        path = self.files(job_id).result_pickle
        if not path.is_file():
            return None
        try:
            value = self._submitit.core.utils.pickle_load(path)
        except (OSError, EOFError, ValueError) as e:
            return ("error", f"unreadable result pickle {path}: {e}")
        if isinstance(value, tuple) and len(value) == 2 and value[0] in ("success", "error"):
            return (str(value[0]), value[1])
        return ("error", f"unexpected content in {path}")

    def cancel(self, job_id: str) -> None:
        """``scancel <id>`` (errors ignored: it may have ended meanwhile)."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                ["scancel", job_id], capture_output=True, timeout=SCANCEL_TIMEOUT_S, check=False
            )

    def files(self, job_id: str) -> JobFiles:
        """submitit's paths for task 0 of ``job_id``."""
        return job_files(self.folder, job_id)


def _ids(command: list[str], what: str) -> set[str]:
    """Job ids printed one per line by ``command``; SacctError when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise sacct.SacctError(f"{what} failed: {e}") from e
    if done.returncode != 0:
        raise sacct.SacctError(f"{what} failed: {done.stderr.strip()[:300]}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def job_files(folder: Path, job_id: str) -> JobFiles:
    """submitit's file layout (``%j`` = the job id, task 0), without importing submitit."""
    base = Path(str(folder).replace("%j", job_id))
    return JobFiles(
        folder=base,
        stdout=base / f"{job_id}_0_log.out",
        stderr=base / f"{job_id}_0_log.err",
        result_pickle=base / f"{job_id}_0_result.pkl",
        submission=base / f"{job_id}_submission.sh",
    )


def log_tail(files: JobFiles, limit: int = LOG_TAIL_CHARS) -> str:
    """The end of a job's error and output logs, for a failure file."""
    parts = []
    for label, path in (("stderr", files.stderr), ("stdout", files.stdout)):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"----- {label}: {path} (last {limit} characters) -----\n{text[-limit:]}")
    return "\n".join(parts)
