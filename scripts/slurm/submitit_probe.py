"""Reproduce SUBMITIT_NOTES.md's measurements against the test cluster (`cluster.sh up`).

Needs submitit (not a project dependency): `python3 -m venv /tmp/sv && /tmp/sv/bin/pip install
submitit==1.5.4 && /tmp/sv/bin/python scripts/slurm/submitit_probe.py [FOLDER]`.
Runs, in about 30 s: two 1-GPU jobs at once, a re-attach by job id from a second Python
process, a cancel, a time-out (timeout_min=1) and a raising function; prints what submitit
reports for each. Exit 1 if an outcome differs from the notes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import submitit


def where(sleep_s: float) -> tuple[str | None, str]:
    time.sleep(sleep_s)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), socket.gethostname()


def sleeper(sleep_s: float) -> str:
    time.sleep(sleep_s)
    return f"slept {sleep_s}"


def boom() -> None:
    raise ValueError("llem boom")


REATTACH = """
import sys, submitit
job = submitit.SlurmJob(folder=sys.argv[1], job_id=sys.argv[2])
print(job.result())
"""


def wait(jobs: list[submitit.Job], limit_s: float, poll_s: float = 2.0) -> None:
    """Our own bounded poll: one sacct per period for all jobs, no 10-minute backoff."""
    watcher = submitit.SlurmJob.watcher
    end = time.time() + limit_s
    pending = set(jobs)
    while pending:
        if time.time() > end:
            raise TimeoutError(f"jobs {[j.job_id for j in pending]} not done in {limit_s} s")
        watcher.update()
        for j in list(pending):
            if j.paths.result_pickle.exists() or watcher.is_done(j.job_id, mode="cache"):
                pending.discard(j)
                j._results_timeout_s = 0  # sacct says finished: do not wait 15 s for a pickle
        time.sleep(poll_s)


def outcome(job: submitit.Job) -> str:
    state = job.watcher.get_state(job.job_id, mode="force").split()[0]
    err = job.exception()
    if err is None:
        return f"job {job.job_id}: state {state}, no error"
    # The gist: the traceback's last line, or "has not produced any output (state: ...)".
    lines = str(err).splitlines()
    gist = next((x for x in reversed(lines) if "Error:" in x or "has not produced" in x), "")
    return f"job {job.job_id}: state {state}, {type(err).__name__}: {gist.strip()}"


def main() -> int:
    folder = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="llem-submitit-")
    folder = os.path.join(folder, "%j")
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ok = True

    ex.update_parameters(timeout_min=5, gpus_per_node=1, mem_gb=1)
    gpu_jobs = [ex.submit(where, 8) for _ in range(2)]
    attach = subprocess.run(
        [sys.executable, "-c", REATTACH, folder, gpu_jobs[0].job_id],
        capture_output=True,
        text=True,
        timeout=120,
    )
    wait(gpu_jobs, 120)
    results = [j.result() for j in gpu_jobs]
    print("two 1-GPU jobs:", results, "| re-attached in a 2nd process:", attach.stdout.strip())
    ok &= results[0][0] != results[1][0] and attach.stdout.strip() == str(results[0])

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")  # parameters cannot be unset
    ex.update_parameters(timeout_min=1)
    cancelled = ex.submit(sleeper, 300)
    timed_out = ex.submit(sleeper, 300)
    time.sleep(5)
    cancelled.cancel()
    wait([cancelled, timed_out], 180)
    for job, want in ((cancelled, "CANCELLED"), (timed_out, "FAILED")):
        line = outcome(job)
        print(line)
        ok &= f"state {want}" in line
    ok &= "timed-out and not checkpointable" in outcome(timed_out)

    ex.update_parameters(timeout_min=5)
    raised = ex.submit(boom)
    wait([raised], 60)
    line = outcome(raised)
    print(line)
    ok &= "FailedJobError" in line and "llem boom" in line
    print("probe:", "OK" if ok else "DIFFERS FROM THE NOTES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
