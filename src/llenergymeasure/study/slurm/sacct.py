"""``sacct``: the state of many Slurm jobs in one call (parsed ``--parsable2`` output).

Only the job (allocation) line of each job is read (``-X``): its ``State`` (``CANCELLED by
0``, ``TIMEOUT``, ...), ``ExitCode`` (``code:signal``), ``Reason``, ``NodeList`` and times.
Without ``-D`` sacct shows the last run of a requeued job, which is the one that counts.
sacct needs Slurm's accounting (slurmdbd); where it is missing sacct fails and every job
stays unknown: the executor bounds how long it waits for a job that sacct does not know.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from llenergymeasure.exceptions import StudyError

FIELDS = ("JobIDRaw", "State", "ExitCode", "Reason", "NodeList", "Start", "End", "Elapsed")
SACCT_TIMEOUT_S = 60.0


class SacctError(StudyError):
    """sacct could not be run or failed (the caller retries at its next poll)."""


@dataclass(frozen=True)
class SacctRecord:
    """One job's line of sacct."""

    job_id: str
    state: str  # as sacct says it, e.g. "CANCELLED by 0"
    exit_code: str = ""  # "code:signal", e.g. "0:15"
    reason: str = ""
    node_list: str = ""
    start: str = ""
    end: str = ""
    elapsed: str = ""

    @property
    def base_state(self) -> str:
        """``CANCELLED`` for ``CANCELLED by 0`` or ``CANCELLED+``."""
        return normalise_state(self.state)


def normalise_state(state: str) -> str:
    """sacct's state without ``by <uid>`` or a truncation ``+``; ``UNKNOWN`` when empty."""
    head = state.strip().split(" ")[0].rstrip("+") if state.strip() else ""
    return head.upper() or "UNKNOWN"


def parse_sacct(text: str) -> dict[str, SacctRecord]:
    """Records by job id from ``sacct -n -P -X -o <FIELDS>`` output (step lines skipped)."""
    records: dict[str, SacctRecord] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        parts += [""] * (len(FIELDS) - len(parts))
        job_id = parts[0].strip()
        if not job_id or "." in job_id:
            continue
        records[job_id] = SacctRecord(job_id, *(p.strip() for p in parts[1 : len(FIELDS)]))
    return records


def query(job_ids: Iterable[str], timeout_s: float = SACCT_TIMEOUT_S) -> dict[str, SacctRecord]:
    """The sacct record of each job sacct knows (others are absent); SacctError if sacct
    cannot be run or fails."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    exe = shutil.which("sacct")
    if exe is None:
        raise SacctError("sacct not found on PATH: the Slurm executor needs Slurm's client tools")
    command = [exe, "-n", "-P", "-X", "-o", ",".join(FIELDS), "-j", ",".join(ids)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SacctError(f"sacct failed: {e}") from e
    if done.returncode != 0:
        raise SacctError(
            f"sacct exited with {done.returncode}: {done.stderr.strip()[:300]} (the Slurm "
            "executor needs job accounting: slurmdbd)"
        )
    return parse_sacct(done.stdout)
