"""Idle baseline: GPU power with nothing running, to split gross energy into idle + above-idle.

How: the session opens a window over ``duration_s`` seconds of doing nothing (the parent
sleeps; the sampler keeps sampling) and divides the GPU energy (counter, or polled where there
is no counter) by the duration, per GPU. The result is cached on disk (platformdirs user cache
dir, or a given path) keyed by the sorted UUIDs of the GPUs in use, for ``cache_ttl_s``.

Caveats, stated in results: idle power depends on temperature (a GPU that just ran hot idles
higher), on clocks and persistence mode, and on other processes using the GPU; a cached value
can be up to ``cache_ttl_s`` old. ``energy_above_idle_j = gross - idle_power_w x duration``
assumes the idle draw would have continued unchanged under load, which is an approximation.
When it comes out negative it is clamped to 0 with a note; the gross figure is always kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from llenergymeasure.domain.energy import BaselineAdjustment, IdleBaseline, QualityFlag

CACHE_FILE = "idle_baseline.json"


@dataclasses.dataclass(frozen=True)
class BaselineSettings:
    """Whether and how to measure the idle baseline."""

    enabled: bool = True
    duration_s: float = 5.0  # same default as ExperimentConfig.baseline.duration_s
    cache_ttl_s: float = 3600.0
    cache_path: Path | None = None  # None = <user cache dir>/idle_baseline.json


def default_cache_path() -> Path:
    """``<platformdirs user cache dir>/idle_baseline.json``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("llenergymeasure")) / CACHE_FILE


def baseline_key(uuids: list[str]) -> str:
    """Cache key of a set of GPUs: their sorted UUIDs."""
    return ",".join(sorted(uuids))


class BaselineCache:
    """JSON file of IdleBaseline by key; entries older than the TTL are ignored."""

    def __init__(self, path: Path | None = None, ttl_s: float = 3600.0) -> None:
        self.path = path or default_cache_path()
        self.ttl_s = ttl_s

    def _load(self) -> dict[str, dict[str, object]]:
        """All entries (empty if the file is missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str, now_unix_s: float | None = None) -> IdleBaseline | None:
        """A fresh cached baseline for ``key``, marked ``cached=True``; None if absent or stale."""
        entry = self._load().get(key)
        if entry is None:
            return None
        try:
            baseline = IdleBaseline.model_validate(entry)
        except ValueError:
            return None
        now = time.time() if now_unix_s is None else now_unix_s
        if now - baseline.measured_at_unix_s > self.ttl_s:
            return None
        return baseline.model_copy(update={"cached": True})

    def put(self, baseline: IdleBaseline) -> None:
        """Store a baseline (atomic replace of the whole file)."""
        data = self._load()
        data[baseline.key] = baseline.model_copy(update={"cached": False}).model_dump(mode="json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def adjust_for_idle(
    gross_energy_j: float, duration_s: float, baseline: IdleBaseline
) -> tuple[BaselineAdjustment, QualityFlag | None]:
    """Split gross energy into idle and above-idle parts (clamped at 0, with a flag)."""
    idle_energy_j = baseline.idle_power_w * duration_s
    above_j = gross_energy_j - idle_energy_j
    clamped = above_j < 0
    note = None
    flag = None
    if clamped:
        note = (
            f"Gross energy {gross_energy_j:.1f} J is below idle power x duration "
            f"({idle_energy_j:.1f} J): energy above idle clamped to 0. The baseline may be "
            "stale or taken while the GPU was warmer; gross energy is unaffected."
        )
        flag = QualityFlag(code="baseline_clamped", message=note)
    adjustment = BaselineAdjustment(
        baseline=baseline,
        idle_power_w=baseline.idle_power_w,
        gross_energy_j=gross_energy_j,
        idle_energy_j=idle_energy_j,
        energy_above_idle_j=max(0.0, above_j),
        clamped=clamped,
        note=note,
    )
    return adjustment, flag
