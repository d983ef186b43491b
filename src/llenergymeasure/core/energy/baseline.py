"""Idle baseline: GPU power with nothing running, to split gross energy into idle + above-idle.

How: the session opens a window over ``duration_s`` seconds of doing nothing (the parent
sleeps; the sampler keeps sampling) and divides the GPU energy (counter, or polled where there
is no counter) by the duration, per GPU. The result is cached on disk (platformdirs user cache
dir, or a given path) keyed by the node's host name, the sorted UUIDs of the GPUs in use and
whether a CUDA compute context was open on them (``baseline_key``), for ``cache_ttl_s``.

Per node: on a cluster the cache file usually sits in a home directory shared by every node,
and a study's experiments run on whichever node Slurm gives them. A GPU UUID alone already
names one physical GPU, but idle power also depends on the node around it (fans, other
jobs, driver and persistence settings), so the key starts with the host name: an experiment
on a node without a fresh baseline of its own GPUs measures one. Concurrent jobs may write
the file at once: each writes its own temporary file and the read-modify-replace is held
under an advisory lock (``<file>.lock``), so no entry is half-written; a writer that cannot
lock (no flock on that file system) still replaces atomically and at worst loses another's
entry, which is then measured again.

Context and clock state: "idle" is not one state. On an H100 with no CUDA context open the
GPU drops to 345 MHz SM clock and draws ~73 W; as soon as any process holds a context (torch
creates it at its first CUDA allocation) the GPU runs at full clock (1980 MHz, P0) and draws
~124 W within 2 s; right after heavy work ~131 W, falling slowly to ~124 W over 90 s as it
cools (49 -> 39 C), although sample-to-sample noise is only ~0.03 W.
The experiment runner takes its baseline with the model loaded (context open, "ready idle"),
a library user calling ``measure_baseline()`` before loading anything gets the no-context
state: a 70 % difference, hence the context state in the cache key. The baseline also records
``compute_processes`` and, from the telemetry sampler, the mean SM clock and temperature and
the power trend over the window (``idle_state``): a trend beyond
``quality.BASELINE_SETTLED_PCT`` means ``settled=False``, and every report adjusted with that
baseline carries the ``baseline_unsettled`` flag.

Caveats, stated in results: idle power depends on temperature (a GPU that just ran hot idles
higher), on clocks and persistence mode, and on other processes using the GPU; a cached value
can be up to ``cache_ttl_s`` old. ``energy_above_idle_j = gross - idle_power_w x duration``
assumes the idle draw would have continued unchanged under load, which is an approximation.
When it comes out negative it is clamped to 0 with a note; the gross figure is always kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from llenergymeasure.core.energy.quality import BASELINE_SETTLED_PCT
from llenergymeasure.core.energy.timeline import Timeline
from llenergymeasure.domain.energy import BaselineAdjustment, IdleBaseline, QualityFlag

CACHE_FILE = "idle_baseline.json"
#: Fewer power samples than this per GPU in the window: no trend (its thirds are too thin).
MIN_TREND_SAMPLES = 6


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


def baseline_key(uuids: Sequence[str], context_open: bool | None, host: str | None = None) -> str:
    """Cache key: ``<host>/`` (when given), the sorted GPU UUIDs, then ``|context``,
    ``|no-context`` or ``|unknown``.

    ``context_open``: whether any process held a CUDA compute context on those GPUs when the
    baseline was (to be) measured; None when NVML could not say. ``host``: the node
    (`socket.gethostname`), so that a cache shared by a cluster's nodes keeps them apart.
    """
    state = "unknown" if context_open is None else "context" if context_open else "no-context"
    prefix = f"{host}/" if host else ""
    return prefix + ",".join(sorted(uuids)) + "|" + state


@dataclasses.dataclass(frozen=True)
class IdleState:
    """What the telemetry sampler saw during the baseline window (None: not known)."""

    sm_clock_mhz: float | None = None
    temperature_c: float | None = None
    power_trend_pct: float | None = None

    @property
    def settled(self) -> bool | None:
        """Power stayed within ``BASELINE_SETTLED_PCT`` over the window (None: trend unknown)."""
        if self.power_trend_pct is None:
            return None
        return abs(self.power_trend_pct) <= BASELINE_SETTLED_PCT


def idle_state(timeline: Timeline, t0_s: float, t1_s: float, devices: Sequence[str]) -> IdleState:
    """Mean SM clock and temperature over [t0, t1] and the power trend of ``devices``."""
    rows = [r for r in timeline.window_rows(t0_s, t1_s) if r["device"] in devices]
    clocks = [float(r["sm_clock_mhz"]) for r in rows if r.get("sm_clock_mhz") is not None]
    temps = [float(r["temperature_c"]) for r in rows if r.get("temperature_c") is not None]
    return IdleState(_mean(clocks), _mean(temps), power_trend_pct(timeline, t0_s, t1_s, devices))


def power_trend_pct(
    timeline: Timeline, t0_s: float, t1_s: float, devices: Sequence[str]
) -> float | None:
    """100 x (last third - first third) / first third of the window's mean power, summed over
    ``devices``; None without devices or with fewer than MIN_TREND_SAMPLES samples of one."""
    first_w = last_w = 0.0
    for device in devices:
        watts = [p for t, p in timeline.series(device, "power_w") if t0_s <= t <= t1_s]
        if len(watts) < MIN_TREND_SAMPLES:
            return None
        third = len(watts) // 3
        first_w += sum(watts[:third]) / third
        last_w += sum(watts[-third:]) / third
    if not devices or first_w <= 0:
        return None
    return 100.0 * (last_w - first_w) / first_w


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


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
        """Store a baseline (atomic replace of the whole file, under the file's lock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(self.path.name + ".lock")):
            data = self._load()
            entry = baseline.model_copy(update={"cached": False}).model_dump(mode="json")
            data[baseline.key] = entry
            tmp = self.path.with_name(f".{self.path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (blocking: writers hold it for milliseconds);
    without flock (another OS, a file system without locks) go on unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
