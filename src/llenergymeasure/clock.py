"""Wall-clock helpers shared by every layer (bottom layer: imports nothing of the package)."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time in UTC (timezone-aware): result, state and manifest timestamps."""
    return datetime.now(timezone.utc)
