"""Recovering a study directory: orphans, adoption of finished results, unreadable results.

What a resume (or the live runner, after a crash it saw) does with what an earlier run left:

* **A still-live orphan** — an experiment process whose study died and which is still
  running (where the parent-death signal did not reach it): found by the entry's
  `RunnerInfo` (same host, same pid *and* the same process start time, since pids are
  reused). :func:`wait_for_exit` blocks on it (a pidfd on Linux; never a spin) up to the
  experiment's timeout, then :func:`stop_process` (terminate, then kill). Nothing else
  starts before: never two experiments of one study on one GPU at the same time.
* **Adoption** — :func:`adoptable_result`: an entry that is not completed but whose run
  directory holds a complete, valid, not-failed ``result.json`` of the same configuration
  finished after all (the runner died, or its manifest write failed, before recording it).
  :func:`adopt` records it instead of running it again. This depends only on the run
  directory and the file, not on how the experiment was run, so container and batch
  executors adopt the same way.
* **Unreadable results** — :func:`set_aside` renames a corrupt ``result.json`` to
  ``result.json.corrupt`` (``.corrupt-2``, ...): kept for inspection, never deleted, and no
  longer counted as a result; the entry runs again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from llenergymeasure.exceptions import ResultFileError
from llenergymeasure.results.filenames import RESULT_FILENAME
from llenergymeasure.results.persistence import read_result
from llenergymeasure.study.manifest import ManifestEntry, RunnerInfo

if TYPE_CHECKING:
    from llenergymeasure.domain.results import ExperimentResult

logger = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # after SIGTERM, before SIGKILL
_START_TIME_TOLERANCE_S = 0.05  # psutil start times are in clock ticks (10 ms)


# ---- who runs an attempt ------------------------------------------------------------------
def local_runner(pid: int) -> RunnerInfo:
    """RunnerInfo for a child process of this runner on this host."""
    return RunnerInfo(
        kind="local",
        host=socket.gethostname(),
        pid=pid,
        start_time=process_start_time(pid),
        study_pid=os.getpid(),
    )


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (s since the epoch), or None if it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def is_alive(info: RunnerInfo | None) -> bool:
    """Whether the local process ``info`` names still runs on this host (same start time:
    a reused pid is another process). False when it cannot be identified."""
    if info is None or info.kind != "local" or info.pid is None or info.start_time is None:
        return False
    if info.host != socket.gethostname():
        return False
    try:
        process = psutil.Process(info.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = float(process.create_time())
    except (psutil.Error, OSError):
        return False
    return abs(started - info.start_time) < _START_TIME_TOLERANCE_S


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Block until ``pid`` (not necessarily our child) exits or ``timeout_s`` passes; True
    if it exited. A pidfd where the kernel has one, else psutil's wait."""
    timeout_s = max(0.0, timeout_s)
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                return bool(poller.poll(timeout_s * 1000.0))
            finally:
                os.close(fd)
    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        return False
    except psutil.Error:
        pass
    return True


def stop_process(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL (a process that is gone is fine)."""
    try:
        process = psutil.Process(pid)
        process.terminate()
    except psutil.Error:
        return
    if not wait_for_exit(pid, grace_s):
        with contextlib.suppress(psutil.Error):
            process.kill()
        wait_for_exit(pid, grace_s)


# ---- adoption -----------------------------------------------------------------------------
def result_file(study_dir: Path, entry: ManifestEntry) -> Path | None:
    """Where the entry's latest attempt writes its result.json (None: no run dir known)."""
    if entry.run_dir is None:
        return None
    return Path(study_dir) / entry.run_dir / RESULT_FILENAME


def adoptable_result(study_dir: Path, entry: ManifestEntry) -> ExperimentResult | None:
    """The entry's finished result, if its run directory holds a complete, valid, not
    failed result.json of the same configuration; None otherwise. An unreadable file is
    set aside (and recorded in the entry) so it is never mistaken for a result."""
    path = result_file(study_dir, entry)
    if path is None or not path.is_file():
        return None
    try:
        result = read_result(path)
    except ResultFileError as e:
        entry.set_aside = [*entry.set_aside, relative(set_aside(path), study_dir)]
        logger.warning("%s", e)
        return None
    except OSError:
        return None
    if result.failed or result.config_hash != entry.config_hash:
        return None
    return result


def adopt(entry: ManifestEntry, result: ExperimentResult, study_dir: Path) -> None:
    """Record ``result`` (found in the entry's run dir) as the entry's completed outcome."""
    from llenergymeasure.study.worker import result_summary

    path = result_file(study_dir, entry)
    assert path is not None
    summary = result_summary(result)
    entry.status = "completed"
    entry.result_path = relative(path, study_dir)
    entry.error, entry.failure_path = None, None
    entry.measurement_s = summary.measurement_s
    entry.metrics = dict(summary.metrics)
    entry.ended_at = result.ended_at
    entry.adopted = True


# ---- unreadable results -------------------------------------------------------------------
def set_aside(path: Path) -> Path:
    """Rename an unreadable result to ``<name>.corrupt[-N]`` (never overwriting, never
    deleting); returns the new path."""
    path = Path(path)
    for n in range(1, 10_000):
        target = path.with_name(f"{path.name}.corrupt" + ("" if n == 1 else f"-{n}"))
        if not target.exists():
            os.replace(path, target)
            return target
    raise FileExistsError(f"{path}: too many files set aside already")


def relative(path: Path, study_dir: Path) -> str:
    """``path`` relative to the study dir when inside it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path(study_dir).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def remaining_s(entry: ManifestEntry, timeout_s: float) -> float:
    """Seconds left of ``timeout_s`` since the entry's attempt started (full if unknown)."""
    if entry.started_at is None:
        return timeout_s
    from llenergymeasure.clock import utc_now

    elapsed = (utc_now() - entry.started_at).total_seconds()
    return max(0.0, timeout_s - elapsed)
