"""A Slurm job's end -> a manifest outcome: completed, or failed with Slurm's reason.

Sources, in this order (SUBMITIT_NOTES.md in scripts/slurm says why):

1. The result pickle submitit writes when the job function returned or raised. A returned
   value is success even while sacct still says RUNNING. A raised error whose trace says
   ``timed-out and not checkpointable`` / ``timed-out too many times`` is submitit's USR2
   handler stopping the job ``signal_delay_s`` before its time limit: reported as TIMEOUT
   (sacct says FAILED there). Any other raised error is the experiment failing: FAILED.
2. Without a pickle, sacct's final state: CANCELLED (``by <uid>``), TIMEOUT (the limit was
   reached without USR2 being handled), OUT_OF_MEMORY (cgroup clusters), NODE_FAIL,
   PREEMPTED (not requeued), BOOT_FAIL, DEADLINE, FAILED. A FAILED job whose error log
   says ``exceeded memory limit`` or ``oom-kill`` was killed for memory by a cluster
   without cgroups (jobacct_gather's OverMemoryKill): reported as OUT_OF_MEMORY.

Every failure keeps sacct's state and exit code (``code:signal``) in its reason, and its
detail has the tail of the job's logs, which stay in the study's ``slurm/`` folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: States in which a job may still run (or run again): keep waiting.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
        "UNKNOWN",
    }
)
#: Final states (COMPLETED included); PREEMPTED is final only once it stays (not requeued).
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)
_SUBMITIT_TIMEOUT = ("timed-out and not checkpointable", "timed-out too many times")
_OOM = re.compile(r"exceeded memory limit|oom[-_ ]kill|out of memory", re.IGNORECASE)
_WHAT = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "past its time limit",
    "OUT_OF_MEMORY": "out of memory",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "preempted (not requeued)",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "past its deadline",
    "REVOKED": "revoked",
    "FAILED": "failed",
}


@dataclass(frozen=True)
class JobEnd:
    """What is known about a job that ended (inputs of `classify`)."""

    job_id: str
    sacct_state: str | None  # normalised (states without "by <uid>"); None: sacct did not say
    exit_code: str | None = None
    node: str | None = None
    returned: bool = False  # the result pickle holds a value
    error_trace: str | None = None  # the result pickle holds this error trace
    stderr_tail: str = ""
    time_limit_min: int | None = None
    signal_delay_s: int | None = None


@dataclass(frozen=True)
class Classified:
    """A job's outcome for the manifest."""

    ok: bool
    state: str  # COMPLETED, CANCELLED, FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...
    reason: str | None = None  # one line, for failures
    detail: str | None = None  # traceback / log tail, for failures


def is_active(state: str | None) -> bool:
    """Whether a job in this (normalised) state may still run; None = unknown to sacct."""
    return state is None or state in ACTIVE_STATES or state not in FINAL_STATES


def classify(end: JobEnd) -> Classified:
    """The manifest outcome of a finished job (see the module docstring)."""
    if end.returned:
        return Classified(ok=True, state="COMPLETED")
    state = end.sacct_state or "UNKNOWN"
    if end.error_trace is not None:
        if any(marker in end.error_trace for marker in _SUBMITIT_TIMEOUT):
            return _failed(end, "TIMEOUT", end.error_trace, via_usr2=True)
        return _failed(end, "FAILED", end.error_trace, raised=_last_line(end.error_trace))
    if state == "FAILED" and _OOM.search(end.stderr_tail):
        return _failed(end, "OUT_OF_MEMORY", end.stderr_tail, sacct_said="FAILED")
    if state == "COMPLETED":  # finished without a pickle: the job never ran our function
        return _failed(end, "FAILED", end.stderr_tail, raised="no result from the job function")
    return _failed(end, state, end.stderr_tail)


def _failed(
    end: JobEnd,
    state: str,
    detail: str,
    *,
    raised: str | None = None,
    via_usr2: bool = False,
    sacct_said: str | None = None,
) -> Classified:
    """A failure with Slurm's state and exit code in its one-line reason."""
    what = _WHAT.get(state, state.lower())
    parts = [f"Slurm job {end.job_id} {state}"]
    facts = []
    if sacct_said:
        facts.append(f"sacct: {sacct_said}")
    if end.exit_code:
        facts.append(f"exit code {end.exit_code}")
    if end.node:
        facts.append(f"node {end.node}")
    if facts:
        parts.append(f"({', '.join(facts)})")
    if via_usr2:
        limit = f"--time={end.time_limit_min}" if end.time_limit_min else "its time limit"
        delay = f"{end.signal_delay_s} s" if end.signal_delay_s else "shortly"
        parts.append(f": {what}: stopped by submitit's USR2 {delay} before {limit}")
    elif raised:
        parts.append(f": {raised}")
    else:
        parts.append(f": {what}")
    reason = " ".join(parts).replace(" :", ":")
    return Classified(ok=False, state=state, reason=reason[:400], detail=detail or None)


def _last_line(trace: str) -> str:
    """The exception line of a traceback (the last line that names an error)."""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Fault|Interrupt|Exit)\b", line):
            return line[:300]
    return lines[-1][:300] if lines else "the job function raised"
