"""A whole study inside one Slurm allocation (docs/slurm.md, pattern B): requeue on USR1.

The batch script runs ``exec llem run study.yaml --resume`` with ``#SBATCH --requeue`` and
``#SBATCH --signal=B:USR1@<seconds>``: Slurm sends SIGUSR1 that long before the time limit.
Inside a Slurm job (``SLURM_JOB_ID`` set) the study runner treats SIGUSR1 as a stop signal
like SIGTERM (running experiment stopped and put back to pending, study marked interrupted,
manifest and summary written) and then requeues its own job with ``scontrol requeue``:
Slurm starts it again and ``--resume`` goes on with the next experiment. SIGTERM (scancel,
or the limit reached without ``--signal``) stops the study without requeueing. Outside a
Slurm job SIGUSR1 keeps its default meaning.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping

#: The signal that means "time is nearly up: stop and requeue" inside a Slurm job.
REQUEUE_SIGNAL = signal.SIGUSR1
REQUEUE_TIMEOUT_S = 60.0


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The id of the Slurm job this process runs in (None outside one)."""
    env = os.environ if environ is None else environ
    return env.get("SLURM_JOB_ID") or None


def requeue_self(job_id: str) -> str | None:
    """``scontrol requeue <job_id>``; None when done, else why it failed."""
    exe = shutil.which("scontrol")
    if exe is None:
        return "scontrol not found on PATH"
    try:
        done = subprocess.run(
            [exe, "requeue", job_id],
            capture_output=True,
            text=True,
            timeout=REQUEUE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"scontrol requeue {job_id} failed: {e}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[:300]
        return f"scontrol requeue {job_id} exited {done.returncode}: {detail}"
    return None
