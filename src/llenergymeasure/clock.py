"""Wall-clock helpers shared by every layer (bottom layer: imports nothing of the package)."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time in UTC (timezone-aware): result, state and manifest timestamps."""
    return datetime.now(timezone.utc)


def process_started_monotonic_s() -> float | None:
    """When this process started, on the ``time.monotonic`` clock (None when unknown).

    From the kernel's process start time (``psutil``, 10 ms resolution): for a fresh
    command-line process, what comes before its first stage (interpreter start, imports,
    configuration) is then timed too. A long-lived process (a notebook) must not use it.
    """
    import time

    try:
        import psutil

        created = float(psutil.Process().create_time())
    except Exception:  # descriptive only: never fail a run over it
        return None
    return time.monotonic() - max(0.0, time.time() - created)
