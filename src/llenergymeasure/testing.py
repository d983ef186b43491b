"""Fakes at the hardware seam, shipped with the package so users' tests can use them too.

Sections:
  1. Clocks        ManualClock: a clock you advance by hand (``sleep`` advances it).
  2. Fake NVML     FakeNVML / FakeDevice: scripted GPUs standing in for ``pynvml``.
  3. Study faults  FaultPlan / fault_injecting_worker: study worker targets that raise, exit
                   hard, hang, stop at a gate while "measuring", crash after writing their
                   result, or write a fast fake result (picklable under ``spawn``).
  4. Launcher faults  LaunchFaults / fault_injecting_process_worker: worker targets of a
                   launched (multi-process) run that exit hard or raise in chosen workers.
  5. Engines       stand_in_vllm() / stand_in_tensorrt_llm(): module trees that stand in
                   for ``vllm`` and ``tensorrt_llm`` at the import seam (put them in
                   ``sys.modules``), for the engine backends' tests where neither engine
                   runs. The vLLM one schedules like continuous batching (``max_num_seqs``
                   slots, one token per running request per step, per-request statistics
                   on vLLM's clocks); the TensorRT-LLM one records what it was built with and
                   saves/loads "engines" as directories.
  6. Fake Slurm    FakeSlurm: a scripted Slurm (JobSystem) on a ManualClock for the Slurm
                   executor; fault_injecting_job: FaultPlan inside a real Slurm job.

FakeNVML implements the ``pynvml`` functions that ``core/energy/_nvml.py`` calls, and raises
real ``pynvml.NVMLError`` instances, so the adapter's own error translation is exercised.
Device readings are pure functions of the clock (no hidden state besides call counts), so a
FakeNVML pickled into a ``spawn`` child process (the telemetry sampler) reports the same
counter values as in the parent when both use ``time.monotonic`` (system-wide on Linux).

Script vocabulary (``FakeDevice``):
  - ``power_w``: piecewise-constant schedule ``((t0_s, watts), (t1_s, watts), ...)`` measured
    from the fake's start time; a plain float means constant power.
  - energy counter = integral of that power, updated in steps every ``counter_period_s``
    (like the real counter's ~100 ms steps); ``reset_at_s`` restarts it from 0 at those times;
    ``wrap_at_mj`` wraps it; ``counter_supported=False`` raises NVML_ERROR_NOT_SUPPORTED.
    ``counter_phase_s`` offsets the step grid, ``counter_jitter_s`` moves each step by a
    deterministic pseudo-random amount in [-jitter/2, +jitter/2] (``counter_seed``), and
    ``counter_delay_s`` makes a step hold the energy drawn up to that long before it.
  - ``power_schedule_from_spans``: a power schedule with a known power per phase (prefill,
    decode, other), optionally noisy, for the phase-energy tests.
  - temperature, SM clock, throttle bitmask, ``compute_processes`` (how many processes hold
    a CUDA context on the GPU; default 0): schedules like ``power_w``.
  - ``errors``: NVML function name -> ``FakeError(code, calls)``; raised on those call
    numbers (1-based, per device and function), or on every call if ``calls`` is None.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime
import functools
import itertools
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from llenergymeasure.orchestration.process_worker import WorkerSpec
    from llenergymeasure.study.worker import WorkerRequest

# ======================================================================================
# 1. Clocks
# ======================================================================================


class ManualClock:
    """A clock that only moves when told to: ``now()``, ``sleep(dt)``, ``advance(dt)``."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.t_s = start_s

    def now(self) -> float:
        """Current time, s."""
        return self.t_s

    def sleep(self, dt_s: float) -> None:
        """Advance the clock instead of sleeping."""
        self.advance(dt_s)

    def advance(self, dt_s: float) -> None:
        """Move the clock forward by ``dt_s`` seconds."""
        self.t_s += max(0.0, dt_s)


# ======================================================================================
# 2. Fake NVML
# ======================================================================================

Schedule = float | tuple[tuple[float, float], ...]

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_UNKNOWN = 999
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_FOUND = 6


def value_at(schedule: Schedule, elapsed_s: float) -> float:
    """Value of a piecewise-constant schedule at ``elapsed_s`` (before the first step: its value)."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    current = schedule[0][1]
    for start_s, value in schedule:
        if elapsed_s >= start_s:
            current = value
    return float(current)


def integral_j(schedule: Schedule, t_from_s: float, t_to_s: float) -> float:
    """Exact integral of a piecewise-constant power schedule (W) over [from, to], J."""
    if t_to_s <= t_from_s:
        return 0.0
    if isinstance(schedule, (int, float)):
        return float(schedule) * (t_to_s - t_from_s)
    if len(schedule) > _FAST_SCHEDULE_LEN:
        cumulative = _cumulative(schedule)
        if cumulative is not None:
            return cumulative(t_to_s) - cumulative(t_from_s)
    edges = sorted({t_from_s, t_to_s, *(s for s, _ in schedule if t_from_s < s < t_to_s)})
    return sum(value_at(schedule, a) * (b - a) for a, b in itertools.pairwise(edges))


_FAST_SCHEDULE_LEN = 32
_CUMULATIVE_CACHE: dict[int, tuple[Schedule, Callable[[float], float] | None]] = {}


def _cumulative(schedule: tuple[tuple[float, float], ...]) -> Callable[[float], float] | None:
    """F(t) with F(b) - F(a) = integral over [a, b] (bisect, O(log n)); None if unsorted.

    Long schedules (built from thousands of phase spans) would make ``integral_j`` quadratic;
    this is cached per schedule object (by identity, keeping the object alive).
    """
    hit = _CUMULATIVE_CACHE.get(id(schedule))
    if hit is not None and hit[0] is schedule:
        return hit[1]
    starts = [float(t) for t, _ in schedule]
    values = [float(v) for _, v in schedule]
    fn: Callable[[float], float] | None = None
    if all(b > a for a, b in itertools.pairwise(starts)):
        at_start = [0.0]
        for i in range(1, len(starts)):
            at_start.append(at_start[-1] + values[i - 1] * (starts[i] - starts[i - 1]))

        def fn(t: float) -> float:
            i = bisect.bisect_right(starts, t) - 1
            if i < 0:
                return values[0] * (t - starts[0])
            return at_start[i] + values[i] * (t - starts[i])

    if len(_CUMULATIVE_CACHE) > 64:
        _CUMULATIVE_CACHE.clear()
    _CUMULATIVE_CACHE[id(schedule)] = (schedule, fn)
    return fn


def power_schedule_from_spans(
    spans: Iterable[Any],
    power_w_by_phase: dict[str, float] | Callable[[Any], float],
    other_w: float,
    t_origin_s: float = 0.0,
    *,
    noise_w: float = 0.0,
    segment_s: float | None = None,
    seed: int = 0,
) -> tuple[tuple[float, float], ...]:
    """A FakeDevice ``power_w`` schedule drawing a known power in each phase span.

    ``spans`` have ``phase``, ``start_s`` and ``end_s`` (``domain.phases.PhaseSpan``) on the
    clock whose reading ``t_origin_s`` is the fake's start (``FakeNVML.t0_s``). Time outside
    every span draws ``other_w``; ``power_w_by_phase`` may instead be a function of the span
    (e.g. a power per engine step). ``noise_w`` adds a Gaussian draw (seeded) to each span, or
    to each ``segment_s`` piece of it.
    """
    rng = random.Random(seed)
    ordered = sorted(spans, key=lambda sp: sp.start_s)
    first = min([0.0, *(sp.start_s - t_origin_s for sp in ordered)])
    points: list[tuple[float, float]] = [(first, other_w)]
    for sp in ordered:
        a, b = sp.start_s - t_origin_s, sp.end_s - t_origin_s
        if b <= a:
            continue
        if callable(power_w_by_phase):
            base = float(power_w_by_phase(sp))
        else:
            base = power_w_by_phase.get(sp.phase, other_w)
        step = segment_s if segment_s else b - a
        t = a
        while t < b - 1e-12:
            points.append((t, base + (rng.gauss(0.0, noise_w) if noise_w else 0.0)))
            t += step
        points.append((b, other_w))
    merged: dict[float, float] = {}
    for t, v in points:
        merged[t] = v  # a span starting where the last ended replaces its "other" point
    return tuple(sorted(merged.items()))


@dataclasses.dataclass(frozen=True)
class FakeError:
    """An NVML error code raised on chosen call numbers (None = always)."""

    code: int
    calls: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """One scripted GPU (see the module docstring for the vocabulary)."""

    uuid: str
    name: str = "Fake H100"
    power_w: Schedule = 100.0
    counter_period_s: float = 0.1
    counter_supported: bool = True
    counter_start_mj: int = 1_000_000
    reset_at_s: tuple[float, ...] = ()
    wrap_at_mj: int | None = None
    power_instant_supported: bool = True
    temperature_c: Schedule = 40.0
    sm_clock_mhz: Schedule = 1980.0
    throttle_mask: Schedule = 0.0
    memory_total_mb: float = 81559.0
    memory_used_mb: float = 1024.0
    utilisation_pct: float = 50.0
    power_limit_w: float = 700.0
    mig_enabled: bool = False
    persistence_mode: bool = True
    compute_processes: Schedule = 0.0
    errors: dict[str, FakeError] = dataclasses.field(default_factory=dict)
    counter_phase_s: float = 0.0
    counter_jitter_s: float = 0.0
    counter_delay_s: float = 0.0
    counter_seed: int = 0

    def energy_mj(self, elapsed_s: float) -> int:
        """Counter value at ``elapsed_s`` after the fake started, mJ."""
        last_reset = max((r for r in self.reset_at_s if r <= elapsed_s), default=None)
        since = 0.0 if last_reset is None else last_reset
        start_mj = self.counter_start_mj if last_reset is None else 0
        if self.counter_phase_s or self.counter_jitter_s or self.counter_delay_s:
            quantised = self._last_step_s(since, elapsed_s) - self.counter_delay_s
            quantised = max(since, quantised)
        else:
            quantised = since + math.floor((elapsed_s - since) / self.counter_period_s) * (
                self.counter_period_s
            )
        value = start_mj + round(integral_j(self.power_w, since, quantised) * 1000.0)
        return value % self.wrap_at_mj if self.wrap_at_mj else value

    def step_time_s(self, since_s: float, k: int) -> float:
        """Time of counter step ``k`` after ``since_s`` (grid + phase + deterministic jitter)."""
        h = ((k + 1) * 2654435761 + self.counter_seed * 40503) % 2**32
        jitter = self.counter_jitter_s * (h / 2**32 - 0.5)
        return since_s + self.counter_phase_s + k * self.counter_period_s + jitter

    def _last_step_s(self, since_s: float, elapsed_s: float) -> float:
        """Time of the last step at or before ``elapsed_s`` (``since_s`` if none yet)."""
        period = self.counter_period_s
        k = math.floor((elapsed_s - since_s - self.counter_phase_s) / period)
        while k >= 0 and self.step_time_s(since_s, k) > elapsed_s:
            k -= 1
        while self.step_time_s(since_s, k + 1) <= elapsed_s:
            k += 1
        return since_s if k < 0 else max(since_s, self.step_time_s(since_s, k))

    def energy_trace_mj(self, elapsed_s: Iterable[float]) -> list[int]:
        """Counter values at each of ``elapsed_s`` (a fast-read trace, without the NVML calls)."""
        return [self.energy_mj(t) for t in elapsed_s]


@dataclasses.dataclass(frozen=True)
class FakeHandle:
    """What FakeNVML hands out as a device handle."""

    index: int
    mig: bool = False


@dataclasses.dataclass
class _Field:
    nvmlReturn: int
    value: Any


@dataclasses.dataclass
class _Memory:
    used: int
    total: int
    free: int


@dataclasses.dataclass
class _Util:
    gpu: int
    memory: int


class FakeNVML:
    """Scripted stand-in for the ``pynvml`` module (the functions llenergymeasure calls).

    >>> fake = FakeNVML([FakeDevice("GPU-a"), FakeDevice("GPU-b")], clock=ManualClock().now)
    >>> with fake.installed():
    ...     ...  # NvmlMeter, EnergySession, collect_environment() now see two fake GPUs
    """

    def __init__(
        self,
        devices: list[FakeDevice],
        clock: Callable[[], float] = time.monotonic,
        init_error: int | None = None,
        driver_version: str = "580.159.04",
        cuda_driver_version: int = 13000,
    ) -> None:
        self.devices = list(devices)
        self.clock = clock
        self.t0_s = clock()
        self.init_error = init_error
        self.driver = driver_version
        self.cuda_driver = cuda_driver_version
        self.calls: dict[tuple[str, int], int] = {}
        self.init_count = 0

    # --- harness ---------------------------------------------------------------------
    @contextlib.contextmanager
    def installed(self) -> Iterator[FakeNVML]:
        """Make ``core.energy._nvml.nvml`` use this fake inside the block."""
        from llenergymeasure.core.energy._nvml import nvml

        with nvml.using(self):
            yield self

    def elapsed_s(self) -> float:
        """Seconds since the fake was created (on its clock)."""
        return self.clock() - self.t0_s

    def call_count(self, name: str, index: int = -1) -> int:
        """How many times ``name`` was called on device ``index`` (-1: device-less calls)."""
        return self.calls.get((name, index), 0)

    def _enter(self, name: str, handle: FakeHandle | None = None) -> FakeDevice | None:
        """Count a call and raise its scripted error, if any."""
        import pynvml

        index = -1 if handle is None else handle.index
        n = self.calls[(name, index)] = self.calls.get((name, index), 0) + 1
        if handle is None:
            return None
        device = self.devices[handle.index]
        err = device.errors.get(name)
        if err is not None and (err.calls is None or n in err.calls):
            raise pynvml.NVMLError(err.code)
        return device

    # --- pynvml functions ------------------------------------------------------------
    def nvmlInit(self) -> None:
        import pynvml

        self._enter("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.init_count = max(0, self.init_count - 1)

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda_driver

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        import pynvml

        if not 0 <= index < len(self.devices):
            raise pynvml.NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeHandle:
        import pynvml

        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i, d in enumerate(self.devices):
            if d.uuid == text:
                return FakeHandle(i)
            if text.startswith("MIG-") and d.mig_enabled and text == "MIG-" + d.uuid[4:]:
                return FakeHandle(i, mig=True)
        raise pynvml.NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceIsMigDeviceHandle(self, handle: FakeHandle) -> int:
        return int(handle.mig)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: FakeHandle) -> FakeHandle:
        return FakeHandle(handle.index)

    def nvmlDeviceGetIndex(self, handle: FakeHandle) -> int:
        return handle.index

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        return self.devices[handle.index].uuid

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self.devices[handle.index].name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        import pynvml

        d = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        assert d is not None
        if not d.counter_supported:
            raise pynvml.NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return d.energy_mj(self.elapsed_s())

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        d = self._enter("nvmlDeviceGetPowerUsage", handle)
        assert d is not None
        return round(value_at(d.power_w, self.elapsed_s()) * 1000.0)

    def nvmlDeviceGetFieldValues(self, handle: FakeHandle, field_ids: list[int]) -> list[_Field]:
        d = self._enter("nvmlDeviceGetFieldValues", handle)
        assert d is not None
        if not d.power_instant_supported:
            return [_Field(NVML_ERROR_NOT_SUPPORTED, None) for _ in field_ids]
        mw = round(value_at(d.power_w, self.elapsed_s()) * 1000.0)
        return [_Field(NVML_SUCCESS, _Value(mw)) for _ in field_ids]

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        d = self._enter("nvmlDeviceGetTemperature", handle)
        assert d is not None
        return int(value_at(d.temperature_c, self.elapsed_s()))

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        d = self._enter("nvmlDeviceGetClockInfo", handle)
        assert d is not None
        return int(value_at(d.sm_clock_mhz, self.elapsed_s()))

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> _Memory:
        d = self._enter("nvmlDeviceGetMemoryInfo", handle)
        assert d is not None
        used, total = int(d.memory_used_mb * 2**20), int(d.memory_total_mb * 2**20)
        return _Memory(used=used, total=total, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> _Util:
        d = self._enter("nvmlDeviceGetUtilizationRates", handle)
        assert d is not None
        return _Util(gpu=int(d.utilisation_pct), memory=0)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeHandle) -> int:
        d = self._enter("nvmlDeviceGetCurrentClocksEventReasons", handle)
        assert d is not None
        return int(value_at(d.throttle_mask, self.elapsed_s()))

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        d = self._enter("nvmlDeviceGetMigMode", handle)
        assert d is not None
        return [int(d.mig_enabled), int(d.mig_enabled)]

    def nvmlDeviceGetPersistenceMode(self, handle: FakeHandle) -> int:
        d = self._enter("nvmlDeviceGetPersistenceMode", handle)
        assert d is not None
        return int(d.persistence_mode)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        d = self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        assert d is not None
        return int(d.power_limit_w * 1000)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[_Process]:
        d = self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        assert d is not None
        n = int(value_at(d.compute_processes, self.elapsed_s()))
        return [_Process(pid=10_000 + i, usedGpuMemory=2**30) for i in range(n)]


@dataclasses.dataclass
class _Value:
    uiVal: int


@dataclasses.dataclass
class _Process:
    pid: int
    usedGpuMemory: int


def fake_gpus(n: int, **kwargs: Any) -> list[FakeDevice]:
    """``n`` identical fake GPUs with UUIDs GPU-fake-0 ... (kwargs go to every FakeDevice)."""
    return [FakeDevice(uuid=f"GPU-fake-{i}", **kwargs) for i in range(n)]


# ======================================================================================
# 3. Study faults
# ======================================================================================
#
# Usage::
#
#     target = FaultPlan(raise_on=("batch_size=2",), exit_on=("max_output_tokens=3",)).target()
#     StudyRunner(study, results_dir=tmp, worker_target=target).run()
#
# A *match* is either ``dotted.field=value`` (compared with the experiment config's field as
# text) or any other text, matched as a substring of the experiment's label. ``cycles``
# restricts faults to those cycles. Experiments that match nothing run for real through
# ``study.worker.experiment_worker``. The study modules are imported inside the functions so
# that the fakes above stay light for the telemetry sampler's spawn child.

INJECTED_EXIT_CODE = 3


class InjectedFault(RuntimeError):
    """The error a raising fault throws inside the worker."""


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """Which experiments fail, and how (see the section comment above).

    ``gate_on``: the child reports the stage ``measuring``, creates the marker file
    ``<gate_dir>/measuring-<position>-<pid>`` and blocks (opening a FIFO, no polling)
    until the test calls :func:`open_gate` for that position — a test can act while a
    child is known to be measuring, without sleeping. ``gate_after_result`` moves the gate
    to after the result is written (before it is reported). ``crash_after_result_on``:
    write the result, then exit hard without reporting it. ``fake_result``: experiments
    that no fault stops write a small valid result of their config (no model, no torch:
    fast) instead of running for real.
    """

    raise_on: tuple[str, ...] = ()
    exit_on: tuple[str, ...] = ()
    hang_on: tuple[str, ...] = ()
    cycles: tuple[int, ...] | None = None
    hang_s: float = 3600.0
    gate_on: tuple[str, ...] = ()
    gate_dir: str | None = None
    gate_after_result: bool = False
    crash_after_result_on: tuple[str, ...] = ()
    fake_result: bool = False
    enospc_flag: str | None = None  # see inject_enospc: a "full disk" while this file exists

    def target(self) -> functools.partial[None]:
        """A worker target (picklable) that applies this plan."""
        return functools.partial(fault_injecting_worker, faults=self)


def fault_injecting_worker(request: WorkerRequest, conn: Connection, faults: FaultPlan) -> None:
    """Exit hard, hang, raise, gate, or run the (real or fake) experiment, as ``faults`` says."""
    from llenergymeasure.study.worker import experiment_worker, serve

    if faults.enospc_flag is not None:
        inject_enospc(faults.enospc_flag)
    gated = crash = False
    if faults.cycles is None or request.cycle in faults.cycles:
        if _matches_any(request, faults.exit_on):
            os._exit(INJECTED_EXIT_CODE)  # no message, no cleanup: like an OOM kill
        if _matches_any(request, faults.hang_on):
            time.sleep(faults.hang_s)
        if _matches_any(request, faults.raise_on):
            serve(request, conn, _raise_injected)
            return
        gated = _matches_any(request, faults.gate_on)
        crash = _matches_any(request, faults.crash_after_result_on)
    if not (gated or crash or faults.fake_result):
        experiment_worker(request, conn)
        return
    measure = functools.partial(
        _fake_measure,
        gate_dir=faults.gate_dir if gated else None,
        gate_after_result=faults.gate_after_result,
        crash=crash,
    )
    serve(request, conn, measure)


def _raise_injected(request: WorkerRequest, progress: Any) -> Any:
    """A Measure that fails the way a real experiment might."""
    progress.stage("loading model")
    raise InjectedFault(f"injected failure for {request.label!r} (cycle {request.cycle})")


def _fake_measure(
    request: WorkerRequest,
    progress: Any,
    gate_dir: str | None,
    gate_after_result: bool,
    crash: bool,
) -> Any:
    """A Measure that writes a small valid result (no model), gated and crashing as asked."""
    progress.stage("measuring")
    if gate_dir is not None and not gate_after_result:
        wait_at_gate(gate_dir, request.position)
    result, path = write_fake_result(request)
    if gate_dir is not None and gate_after_result:
        wait_at_gate(gate_dir, request.position)
    if crash:
        os._exit(INJECTED_EXIT_CODE)  # the result is on disk, but never reported
    return result, path


def write_fake_result(request: WorkerRequest) -> Any:
    """A valid ExperimentResult of ``request.config`` in its run dir: (result, path).

    Its figures are a pure function of the config (an estimated CPU energy of
    ``max_output_tokens``² J over a 1 s window, ``n`` requests of ``max_output_tokens``
    tokens, flagged ``estimate_used``): J/token grows with ``max_output_tokens``, so a
    study of fake results has a best config, the smallest.
    """
    from pathlib import Path

    from llenergymeasure.clock import utc_now
    from llenergymeasure.results.persistence import new_run_dir, write_result

    config = request.config
    run_dir = request.run_dir or new_run_dir(Path(request.results_dir), config.name or "fake")
    now = utc_now()
    result = fake_result(config, started_at=now).model_copy(update={"run_dir": str(run_dir)})
    return result, write_result(result, Path(run_dir))


def fake_result(config: Any, started_at: Any = None, energy_j: float | None = None) -> Any:
    """The ExperimentResult :func:`write_fake_result` writes for ``config`` (no file)."""
    import uuid
    from datetime import datetime, timezone

    from llenergymeasure.config.hashing import config_hash
    from llenergymeasure.domain.energy import (
        EnergyMeasurement,
        EnergyReport,
        MeterSelection,
        QualityFlag,
    )
    from llenergymeasure.domain.metrics import EnergyRatios, InferenceMetrics, Throughput
    from llenergymeasure.domain.metrics import TokenCounts as Tokens
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.redaction import redact

    started_at = started_at or datetime(2026, 1, 1, tzinfo=timezone.utc)
    n, out = config.n, config.max_output_tokens
    joules = float(out * out) if energy_j is None else energy_j
    measurement = EnergyMeasurement.from_devices(
        meter="estimate",
        window="measure",
        scope="cpu_package",
        method="estimate",
        energy_j_by_device={"cpu:all": joules},
        duration_s=1.0,
    )
    energy = EnergyReport(
        window="measure",
        duration_s=1.0,
        measurements=[measurement],
        cpu_energy_j=joules,
        meter_selection=MeterSelection(requested="auto", meters=["estimate"], reason="fake"),
    )
    tokens = n * out
    metrics = InferenceMetrics(
        tokens=Tokens(input_tokens=n, output_tokens=tokens, total_tokens=n + tokens, n_requests=n),
        throughput=Throughput(
            output_tokens_per_s=float(tokens),
            total_tokens_per_s=float(n + tokens),
            requests_per_s=float(n),
            duration_s=1.0,
        ),
        energy_ratios=EnergyRatios(
            energy_j=joules,
            energy_basis="cpu_package gross estimate",
            j_per_output_token=joules / tokens,
        ),
    )
    return ExperimentResult(
        experiment_id=uuid.uuid4().hex[:12],
        name=config.name or "fake",
        config=redact(config.model_dump(mode="json")),  # as the orchestrator stores it
        config_hash=config_hash(config),
        energy=energy,
        metrics=metrics,
        warnings=[QualityFlag(code="estimate_used", message="fake: an estimate")],
        started_at=started_at,
        ended_at=started_at,
        measurement_window_s=1.0,
    )


def wait_at_gate(gate_dir: str, position: int) -> None:
    """Mark this child as measuring, then block until :func:`open_gate` (FIFO open)."""
    from pathlib import Path

    folder = Path(gate_dir)
    fifo = folder / f"go-{position}"
    with contextlib.suppress(FileExistsError):
        os.mkfifo(fifo)
    (folder / f"measuring-{position}-{os.getpid()}").write_text(str(os.getpid()))
    with open(fifo, "rb") as f:  # blocks until a writer opens the FIFO
        f.read()


def open_gate(gate_dir: str | os.PathLike[str], position: int) -> None:
    """Let the child waiting at ``position``'s gate go on (blocks until it is there)."""
    from pathlib import Path

    fifo = Path(gate_dir) / f"go-{position}"
    with contextlib.suppress(FileExistsError):
        os.mkfifo(fifo)
    with open(fifo, "wb"):
        pass


def inject_enospc(flag: str | os.PathLike[str]) -> None:
    """From now on, in this process, every ``os.fsync`` fails with ENOSPC while the file
    ``flag`` exists: a full disk at the write call, where a test cannot mount a small file
    system (atomic writes fsync before they rename, so nothing is half-written)."""
    import errno
    from pathlib import Path

    real = os.fsync
    marker = Path(flag)

    def fsync(fd: Any) -> None:
        if marker.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    os.fsync = fsync


def _matches_any(request: WorkerRequest, patterns: tuple[str, ...]) -> bool:
    """Whether any pattern matches the request (field=value or label substring)."""
    return any(_matches(request, p) for p in patterns)


def _matches(request: WorkerRequest, pattern: str) -> bool:
    """``dotted.field=value`` against the config, else a substring of the label."""
    if "=" in pattern and " " not in pattern:
        path, _, expected = pattern.partition("=")
        value: Any = request.config.model_dump(mode="json")
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return pattern in request.label
            value = value[part]
        return str(value) == expected
    return pattern in request.label


def fault_injecting_job(request: WorkerRequest, faults: FaultPlan) -> Any:
    """A Slurm job function (``study.slurm.job``) that applies ``faults`` like the worker
    above: exit hard, hang (interruptible by submitit's USR2), raise, or run for real.

    ``SlurmExecutor(..., job_function=functools.partial(fault_injecting_job, faults=plan))``
    """
    from llenergymeasure.study.slurm.job import run_experiment_job

    if faults.cycles is None or request.cycle in faults.cycles:
        if _matches_any(request, faults.exit_on):
            os._exit(INJECTED_EXIT_CODE)
        if _matches_any(request, faults.hang_on):
            time.sleep(faults.hang_s)
        if _matches_any(request, faults.raise_on):
            raise InjectedFault(f"injected failure for {request.label!r} (cycle {request.cycle})")
    return run_experiment_job(request)


# ======================================================================================
# 4. Launcher faults
# ======================================================================================
#
# Usage::
#
#     target = LaunchFaults(exit_processes=(1,), after_batches=1).target()
#     ExperimentOrchestrator(config, results_dir=tmp, worker_target=target).run()
#
# Worker ``i`` in ``exit_processes`` calls ``os._exit`` inside its measurement window after
# ``after_batches`` generate calls (like an OOM kill mid-run: no message, no result); one in
# ``raise_processes`` raises InjectedFault at the same point. Other workers run for real.


@dataclasses.dataclass(frozen=True)
class LaunchFaults:
    """Which workers of a launched run fail inside their window, and how."""

    exit_processes: tuple[int, ...] = ()
    raise_processes: tuple[int, ...] = ()
    after_batches: int = 1

    def target(self) -> functools.partial[None]:
        """A worker target (picklable) that applies these faults."""
        return functools.partial(fault_injecting_process_worker, faults=self)


def fault_injecting_process_worker(
    spec: WorkerSpec, conn: Connection, faults: LaunchFaults
) -> None:
    """Run the real worker, with the pytorch backend's generate sabotaged in the window of
    the workers ``faults`` names."""
    from llenergymeasure.orchestration.process_worker import run_process_worker

    index = spec.process_index
    if index in faults.exit_processes or index in faults.raise_processes:
        _sabotage_generate(hard=index in faults.exit_processes, after=faults.after_batches)
    run_process_worker(spec, conn)


def _sabotage_generate(*, hard: bool, after: int) -> None:
    """Patch PyTorchBackend so that, inside run_inference, generate call ``after + 1`` fails."""
    from llenergymeasure.core.backends.pytorch import PyTorchBackend

    real_run, real_generate = PyTorchBackend.run_inference, PyTorchBackend._generate
    state = {"measuring": False, "calls": 0}

    def run_inference(self: Any, prepared: Any) -> Any:
        state["measuring"] = True
        return real_run(self, prepared)

    def generate(self: Any, batch: Any, recorder: Any) -> Any:
        if state["measuring"]:
            if state["calls"] >= after:
                if hard:
                    os._exit(INJECTED_EXIT_CODE)
                raise InjectedFault(f"injected failure after {after} batch(es) of the window")
            state["calls"] += 1
        return real_generate(self, batch, recorder)

    PyTorchBackend.run_inference = run_inference  # type: ignore[method-assign]
    PyTorchBackend._generate = generate  # type: ignore[method-assign]


# ======================================================================================
# 5. Engines: stand-ins for vllm and tensorrt_llm at the import seam
# ======================================================================================
# What the backends call, and nothing more. Field and method names follow vLLM 0.26/0.32
# (LLM, LLMEngine.add_request/step/has_unfinished_requests, RequestOutput, RequestStateStats,
# EngineArgs, current_platform) and the TensorRT-LLM LLM API (LLM, SamplingParams, llmapi).


def _stand_in_module(name: str, **attrs: Any) -> Any:
    """A module object that ``importlib.util.find_spec`` finds once it is in sys.modules."""
    import importlib.machinery
    import types

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []  # a package: submodules resolve through sys.modules
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


class StandInRequestOutputKind:
    """``vllm.sampling_params.RequestOutputKind``."""

    CUMULATIVE, DELTA, FINAL_ONLY = 0, 1, 2


class StandInSamplingParams:
    """Records its keyword arguments (``kwargs``); ``output_kind`` as an attribute."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.output_kind = kwargs.get("output_kind", StandInRequestOutputKind.CUMULATIVE)
        self.max_tokens = int(kwargs.get("max_tokens", 16))


@dataclasses.dataclass
class StandInRequestStats:
    """``vllm.v1.metrics.stats.RequestStateStats``: arrival on the wall clock, the rest on
    ``time.monotonic`` (the engine core's clock)."""

    arrival_time: float = 0.0
    queued_ts: float = 0.0
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    num_generation_tokens: int = 0
    num_preemptions: int = 0


@dataclasses.dataclass
class _StandInRequest:
    request_id: str
    prompt_len: int
    max_tokens: int
    stats: StandInRequestStats
    generated: int = 0
    running: bool = False


class StandInLLMEngine:
    """``LLMEngine`` with continuous batching: ``max_num_seqs`` slots filled in arrival
    order; a step runs every admitted request (prefill gives the first token, each later
    step one more) and takes ``step_s`` seconds (slept, so clocks move)."""

    def __init__(self, llm: StandInLLM) -> None:
        self.llm = llm
        self.waiting: list[_StandInRequest] = []
        self.running: list[_StandInRequest] = []
        self.engine_core = types_namespace(shutdown=llm.shutdown_core)
        self.logger_manager: Any = object()  # the backend switches vLLM's loggers off
        self.vllm_config = llm.vllm_config
        self.added: list[str] = []

    def add_request(self, request_id: str, prompt: Any, params: Any) -> str:
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a string, got {type(request_id)}")
        ids = prompt["prompt_token_ids"]
        stats = StandInRequestStats(arrival_time=time.time(), queued_ts=time.monotonic())
        self.waiting.append(_StandInRequest(request_id, len(ids), params.max_tokens, stats))
        self.added.append(request_id)
        self.llm.params_seen.append(params)
        return f"{request_id}-internal"

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def abort_request(self, ids: Any) -> None:
        self.waiting.clear()
        self.running.clear()

    def step(self) -> list[Any]:
        if self.llm.fail_step_with is not None:
            raise self.llm.fail_step_with
        now = time.monotonic()
        while self.waiting and len(self.running) < self.llm.max_num_seqs:
            req = self.waiting.pop(0)
            req.stats.scheduled_ts = now
            self.running.append(req)
        time.sleep(self.llm.step_s)
        done_ts = time.monotonic()
        outputs = []
        for req in list(self.running):
            req.generated += 1
            req.stats.num_generation_tokens = req.generated
            req.stats.first_token_ts = req.stats.first_token_ts or done_ts
            req.stats.last_token_ts = done_ts
            finished = req.generated >= req.max_tokens
            if finished:
                self.running.remove(req)
            completion = types_namespace(token_ids=[req.generated % 97 + 4])
            outputs.append(
                types_namespace(
                    request_id=req.request_id,
                    outputs=[completion],
                    finished=finished,
                    metrics=req.stats if self.llm.log_stats else None,
                    num_cached_tokens=self.llm.cached_tokens if req.generated == 1 else 0,
                )
            )
        return outputs


def types_namespace(**kwargs: Any) -> Any:
    """A ``types.SimpleNamespace`` (kept as a function so the section imports nothing)."""
    import types

    return types.SimpleNamespace(**kwargs)


class StandInLLM:
    """``vllm.LLM``: records its keyword arguments; ``llm_engine`` is a StandInLLMEngine.

    Class attributes steer the next instances: ``fail_with`` (raised by the constructor),
    ``step_s`` (seconds per engine step), ``cached_tokens`` (prefix-cache hits reported
    per request). ``instances`` collects every engine built.
    """

    instances: list[StandInLLM] = []
    fail_with: Exception | None = None
    step_s = 0.001
    cached_tokens = 0

    def __init__(self, **kwargs: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.kwargs = kwargs
        self.max_num_seqs = int(kwargs.get("max_num_seqs") or 256)
        self.log_stats = not kwargs.get("disable_log_stats", True)
        self.fail_step_with: Exception | None = None
        self.params_seen: list[Any] = []
        self.core_shut_down = False
        self.prefix_resets = 0
        blocks = 64
        self.vllm_config = types_namespace(
            scheduler_config=types_namespace(
                max_num_seqs=self.max_num_seqs,
                max_num_batched_tokens=8192,
                enable_chunked_prefill=True,
                async_scheduling=False,
            ),
            cache_config=types_namespace(
                enable_prefix_caching=kwargs.get("enable_prefix_caching", True),
                block_size=16,
                num_gpu_blocks=blocks,
                gpu_memory_utilization=kwargs.get("gpu_memory_utilization", 0.92),
                cache_dtype="auto",
            ),
            parallel_config=types_namespace(
                distributed_executor_backend="uni",
                tensor_parallel_size=int(kwargs.get("tensor_parallel_size") or 1),
                pipeline_parallel_size=int(kwargs.get("pipeline_parallel_size") or 1),
            ),
            model_config=types_namespace(
                max_model_len=2048,
                dtype=types_namespace(itemsize=2),
                get_num_layers=lambda pc: 2,
                get_num_kv_heads=lambda pc: 2,
                get_head_size=lambda: 64,
            ),
        )
        self.llm_engine = StandInLLMEngine(self)
        self.instances.append(self)

    def reset_prefix_cache(self) -> bool:
        self.prefix_resets += 1
        return True

    def generate(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("the vLLM backend must not call LLM.generate (it steps the engine)")

    def shutdown_core(self) -> None:
        self.core_shut_down = True


@dataclasses.dataclass
class StandInEngineArgs:
    """``vllm.engine.arg_utils.EngineArgs``: the fields the backend maps to (both 0.26 and
    0.32 have them); ``swap_space`` is absent, as in both."""

    model: str = ""
    seed: int = 0
    dtype: str = "auto"
    skip_tokenizer_init: bool = False
    disable_log_stats: bool = True
    load_format: str = "auto"
    quantization: str | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.92
    kv_cache_memory_bytes: int | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False
    async_scheduling: bool | None = None
    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None
    block_size: int | None = None


def stand_in_vllm(platform: str = "cuda") -> dict[str, Any]:
    """Modules standing in for vLLM: ``{name: module}`` to put into ``sys.modules``.

    ``modules["vllm"].LLM`` is a fresh StandInLLM subclass (its own ``instances`` list).
    """
    llm = type("LLM", (StandInLLM,), {"instances": []})
    is_cpu = platform == "cpu"
    current = types_namespace(device_type=platform, is_cpu=lambda: is_cpu)
    return {
        "vllm": _stand_in_module(
            "vllm", LLM=llm, SamplingParams=StandInSamplingParams, __version__="0.32.0"
        ),
        "vllm.sampling_params": _stand_in_module(
            "vllm.sampling_params", RequestOutputKind=StandInRequestOutputKind
        ),
        "vllm.platforms": _stand_in_module("vllm.platforms", current_platform=current),
        "vllm.engine": _stand_in_module("vllm.engine"),
        "vllm.engine.arg_utils": _stand_in_module(
            "vllm.engine.arg_utils", EngineArgs=StandInEngineArgs
        ),
    }


class StandInTrtLLM:
    """``tensorrt_llm.LLM``: records its keyword arguments; ``generate`` answers
    ``output_tokens`` tokens per prompt; ``save(dir)`` writes a fake engine directory.

    ``instances`` collects every engine built; ``fail_with`` is raised by the constructor.
    """

    instances: list[StandInTrtLLM] = []
    fail_with: Exception | None = None
    output_tokens = 3

    def __init__(self, **kwargs: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.kwargs = kwargs
        self.calls: list[tuple[list[Any], Any, bool]] = []
        self.saved_to: list[str] = []
        self.shut_down = False
        self.instances.append(self)

    def generate(self, prompts: list[Any], sampling: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append((list(prompts), sampling, use_tqdm))
        done = types_namespace(token_ids=list(range(self.output_tokens)))
        return [types_namespace(outputs=[done], metrics=None) for _ in prompts]

    def save(self, engine_dir: str) -> None:
        import json
        from pathlib import Path

        out = Path(engine_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"built_with": sorted(self.kwargs)}))
        (out / "rank0.engine").write_bytes(b"stand-in engine")
        self.saved_to.append(engine_dir)

    def shutdown(self) -> None:
        self.shut_down = True


class StandInKwargs:
    """A config object that records its keyword arguments (KvCacheConfig, QuantConfig)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, StandInKwargs)
            and type(other) is type(self)
            and other.kwargs == self.kwargs
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.kwargs))))


class StandInQuantAlgo:
    """``tensorrt_llm.llmapi.QuantAlgo``: member names as strings."""

    FP8 = "FP8"
    W8A16 = "W8A16"
    W4A16 = "W4A16"
    W4A16_AWQ = "W4A16_AWQ"
    W8A8_SQ_PER_CHANNEL = "W8A8_SQ_PER_CHANNEL"


def stand_in_tensorrt_llm(version: str = "0.20.0") -> dict[str, Any]:
    """Modules standing in for TensorRT-LLM: ``{name: module}`` for ``sys.modules``."""
    llm = type("LLM", (StandInTrtLLM,), {"instances": []})
    llmapi = _stand_in_module(
        "tensorrt_llm.llmapi",
        KvCacheConfig=type("KvCacheConfig", (StandInKwargs,), {}),
        QuantConfig=type("QuantConfig", (StandInKwargs,), {}),
        QuantAlgo=StandInQuantAlgo,
    )
    root = _stand_in_module(
        "tensorrt_llm",
        LLM=llm,
        SamplingParams=type("SamplingParams", (StandInKwargs,), {}),
        llmapi=llmapi,
        __version__=version,
    )
    return {"tensorrt_llm": root, "tensorrt_llm.llmapi": llmapi}


# ======================================================================================
# 6. Planned workloads: a fake GPU whose power follows phases known in advance
# ======================================================================================
#
# Energy by phase needs a fake GPU drawing a known power in each phase while the tool
# measures. The phases cannot be known before a real model runs, so the workload is planned
# first (absolute ``time.monotonic`` times), the fake's power schedule is built from the
# plan, and a backend follows the plan: it sleeps until each planned batch (or engine step)
# has ended and reports the planned times as its token times (the fake "GPU" ran exactly
# then). Usage::
#
#     origin = time.monotonic()
#     plan = plan_static_batches(origin + 1.0, 60.0, seed=0)
#     power = power_schedule_from_spans(planned_spans(plan), {"prefill": 600, "decode": 400},
#                                       150.0, t_origin_s=origin)
#     fake = FakeNVML([FakeDevice("GPU-fake-0", power_w=power)]); fake.t0_s = origin
#     backend = PlannedBackend(plan)     # monkeypatch registry.get_backend to return it


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """A static batch at planned times: prefill, then ``output_tokens - 1`` decode steps."""

    start_s: float
    prefill_s: float
    step_s: float
    input_tokens: tuple[int, ...]
    output_tokens: int

    @property
    def first_token_s(self) -> float:
        return self.start_s + self.prefill_s

    @property
    def token_times_s(self) -> list[float]:
        return [self.first_token_s + k * self.step_s for k in range(self.output_tokens)]

    @property
    def end_s(self) -> float:
        return self.first_token_s + (self.output_tokens - 1) * self.step_s


def plan_static_batches(
    t_start_s: float,
    duration_s: float,
    seed: int = 0,
    *,
    batch: int = 4,
    input_tokens: tuple[int, int] = (64, 512),
    output_tokens: tuple[int, int] = (8, 40),
    step_s: float = 0.012,
    prefill_s_per_token: float = 2.5e-5,
    gap_s: tuple[float, float] = (0.004, 0.03),
) -> list[PlannedBatch]:
    """Static batches with random prompt/output lengths and host gaps between them."""
    rng = random.Random(seed)
    t, plan = t_start_s, []
    while t < t_start_s + duration_s:
        t += rng.uniform(*gap_s)
        n_in = tuple(rng.randint(*input_tokens) for _ in range(batch))
        prefill = 0.004 + prefill_s_per_token * sum(n_in)
        b = PlannedBatch(t, prefill, step_s, n_in, rng.randint(*output_tokens))
        plan.append(b)
        t = b.end_s
    return plan


def planned_spans(plan: Iterable[PlannedBatch]) -> list[Any]:
    """The plan's prefill and decode spans (``domain.phases.PhaseSpan``)."""
    from llenergymeasure.domain.phases import DECODE, PREFILL, PhaseSpan

    spans = []
    for b in plan:
        spans.append(PhaseSpan(PREFILL, b.start_s, b.first_token_s, sum(b.input_tokens)))
        if b.output_tokens > 1:
            n_dec = len(b.input_tokens) * (b.output_tokens - 1)
            spans.append(PhaseSpan(DECODE, b.first_token_s, b.end_s, n_dec))
    return spans


def follow_plan(
    plan: list[PlannedBatch], n_batches: int, after_s: float | None = None
) -> list[Any]:
    """Sleep through the next ``n_batches`` planned batches, from the one running at
    ``after_s`` (default: now; the fake GPU draws its power whether or not anyone waits for
    it, so it belongs to the window); their ``RequestTiming`` s with the planned times."""
    from llenergymeasure.core.metrics import RequestTiming

    start = time.monotonic() if after_s is None else after_s
    todo = [b for b in plan if b.end_s > start][:n_batches]
    if len(todo) < n_batches:
        raise RuntimeError("the plan is too short for this run: plan a longer workload")
    timings = []
    for b in todo:
        time.sleep(max(0.0, b.end_s - time.monotonic()))
        timings += [
            RequestTiming(b.start_s, b.token_times_s, n_in, b.output_tokens)
            for n_in in b.input_tokens
        ]
    return timings


class PlannedBackend:
    """An inference backend that follows a plan of static batches on fake GPU 0.

    ``tokenize`` makes ``n_batches`` batches (default: the config's ``n`` / the plan's batch
    size); ``run_inference`` runs the next that many planned batches (see
    :func:`follow_plan`). Timing method ``cuda_events`` (it stands in for a GPU run).
    """

    name = "pytorch"

    def __init__(self, plan: list[PlannedBatch], n_batches: int | None = None) -> None:
        self.plan = plan
        self.n_batches = n_batches
        self.config: Any = None

    def get_runtime_capabilities(self, config: Any = None) -> Any:
        from llenergymeasure.core.backends.protocol import RuntimeCapabilities

        return RuntimeCapabilities("direct", "orchestrator", True)

    def validate_config(self, config: Any) -> list[str]:
        return []

    def initialize(self, config: Any, prompts: list[Any]) -> None:
        self.config = config

    def tokenize(self, prompts: list[Any]) -> Any:
        from llenergymeasure.core.backends.protocol import PreparedBatch, PreparedBatches

        size = len(self.plan[0].input_tokens)
        n = self.n_batches or max(1, len(prompts) // size)
        batches = [
            PreparedBatch([f"p{k}-{i}" for i in range(size)], [1] * size, 1, None) for k in range(n)
        ]
        return PreparedBatches(batches, max(b.output_tokens for b in self.plan))

    def warmup_step(self, prepared: Any) -> float:
        time.sleep(0.005)
        return 0.005

    def run_inference(self, prepared: Any) -> Any:
        from llenergymeasure.core.backends.protocol import InferenceOutput

        start = time.monotonic()
        timings = follow_plan(self.plan, len(prepared.batches), start)
        return InferenceOutput(
            timings=timings, n_batches=len(prepared.batches), device="cuda:0",
            timing_method="cuda_events", duration_s=time.monotonic() - start,
        )  # fmt: skip

    def synchronize(self) -> None:
        return None

    def device_indices(self) -> list[int]:
        return [0]

    def cleanup(self, *, process_exits: bool = False) -> None:
        return None


def plan_engine_steps(
    t_start_s: float, duration_s: float, seed: int = 0, *, max_seqs: int = 16
) -> list[Any]:
    """A vLLM-like step loop at planned times (``domain.phases.StepTokens``): arrivals,
    admission up to 2048 prefill tokens a step, one decode token per running request."""
    from llenergymeasure.domain.phases import StepTokens

    rng = random.Random(seed)
    t, steps, nid = t_start_s, [], 0
    running: dict[str, int] = {}
    waiting: list[tuple[str, int, int]] = []
    while t < t_start_s + duration_s:
        if rng.random() < 0.3:
            waiting.append((f"q{nid}", rng.randint(50, 600), rng.randint(10, 120)))
            nid += 1
        pre: dict[str, int] = {}
        while waiting and len(running) < max_seqs and sum(pre.values()) < 2048:
            rid, n_in, n_out = waiting.pop(0)
            pre[rid], running[rid] = n_in, n_out
        dec = {rid: 1 for rid in running if rid not in pre}
        length = 0.006 + 1e-5 * sum(pre.values()) + 2e-4 * len(dec)
        steps.append(StepTokens(t, t + length, pre, dec))
        for rid in list(running):
            running[rid] -= 1
            if running[rid] <= 0:
                del running[rid]
        t += length + (0.003 if rng.random() < 0.15 else 0.0)
    return steps


class PlannedEngineBackend(PlannedBackend):
    """Like :class:`PlannedBackend` for an engine step loop (``InferenceOutput.steps``):
    ``run_inference`` follows the planned steps for ``window_s`` and reports them (and one
    ``RequestTiming`` per request that finished)."""

    name = "vllm"

    def __init__(self, steps: list[Any], window_s: float) -> None:
        super().__init__([PlannedBatch(0.0, 0.0, 0.0, (1,), 1)])
        self.steps = steps
        self.window_s = window_s

    def run_inference(self, prepared: Any) -> Any:
        from llenergymeasure.core.backends.protocol import InferenceOutput
        from llenergymeasure.core.metrics import RequestTiming

        start = time.monotonic()
        todo = [s for s in self.steps if s.end_s > start]  # the step running now, too
        todo = [s for s in todo if s.end_s <= todo[0].start_s + self.window_s]
        time.sleep(max(0.0, todo[-1].end_s - time.monotonic()))
        first: dict[str, tuple[float, int]] = {}
        times: dict[str, list[float]] = {}
        for s in todo:
            for rid, n in s.prefill_tokens.items():
                first[rid] = (s.start_s, n)
            for rid in [*s.prefill_tokens, *s.decode_tokens]:
                times.setdefault(rid, []).append(s.end_s)
        timings = [
            RequestTiming(first[rid][0], times[rid], first[rid][1], len(times[rid]))
            for rid in times
            if rid in first
        ]
        return InferenceOutput(
            timings=timings, n_batches=1, device="cuda:0", timing_method="engine_steps",
            duration_s=time.monotonic() - start, steps=todo,
        )  # fmt: skip


# ======================================================================================
# 7. Fake Slurm
# ======================================================================================
#
# FakeSlurm is a `study.slurm.submit.JobSystem` on a ManualClock: a queue, ``n_gpus`` GPUs
# given to jobs lowest index first (a job waits until enough are free, in submission order),
# each job running ``duration_s`` and ending as its *fate* says:
#
#   ok          writes a minimal result.json in a new run dir of the study, returns a report
#   raise       error pickle with a traceback ending ``InjectedFault: ...`` (sacct FAILED 1:0)
#   usr2        error pickle "timed-out and not checkpointable" (submitit's USR2; FAILED 1:0)
#   timeout     no pickle, sacct TIMEOUT 0:0
#   cancel      no pickle, sacct "CANCELLED by 0" 0:0 (as if scancel'led mid-run)
#   oom         no pickle, sacct FAILED 0:9, "exceeded memory limit" in its stderr log
#   node_fail   no pickle, sacct NODE_FAIL 0:0
#
# ``fates`` maps a label substring (or ``field=value``, as in FaultPlan) to a fate; others
# are ``ok``. A StudyRunner given ``job_system=fake`` and a StudyContext whose wait is
# ``clock.sleep`` runs a whole study instantly and deterministically. ``fake.jobs`` records
# every job (request, GPUs, start and end times) for assertions.


@dataclasses.dataclass
class FakeJob:
    """One job of FakeSlurm."""

    job_id: str
    name: str
    request: Any
    params: dict[str, Any]
    submitted_s: float
    gpus_needed: int
    fate: str
    start_s: float | None = None
    end_s: float | None = None
    gpus: tuple[int, ...] = ()
    cancelled: bool = False
    report: Any = None


class FakeSlurm:
    """A scripted single-node Slurm (see the section comment)."""

    def __init__(
        self,
        clock: ManualClock,
        folder: Any,
        *,
        n_gpus: int = 2,
        duration_s: float = 10.0,
        fates: dict[str, str] | None = None,
        first_id: int = 100,
        share_gpus: bool = False,
    ) -> None:
        from pathlib import Path

        self.clock = clock
        self.folder = Path(folder)
        self.n_gpus = n_gpus
        self.duration_s = duration_s
        self.fates = dict(fates or {})
        self.share_gpus = share_gpus  # a misconfigured cluster: every job gets GPU 0
        self.jobs: dict[str, FakeJob] = {}
        self.sacct_calls = 0
        self._next_id = first_id
        self._t = clock.now()

    # ---- the JobSystem protocol --------------------------------------------------------
    def submit(self, fn: Any, request: Any, params: dict[str, Any]) -> str:
        """Queue a job; its fate from ``fates``."""
        self._advance()
        job_id = str(self._next_id)
        self._next_id += 1
        fate = next((f for p, f in self.fates.items() if _matches(request, p)), "ok")
        self.jobs[job_id] = FakeJob(
            job_id,
            params.get("job_name", ""),
            request,
            dict(params),
            self.clock.now(),
            int(params.get("gpus_per_node", 0)),
            fate,
        )
        self._advance()
        return job_id

    def states(self, job_ids: Any) -> dict[str, Any]:
        """sacct records of the jobs (all known at once)."""
        from llenergymeasure.study.slurm.sacct import SacctRecord

        self._advance()
        self.sacct_calls += 1
        out = {}
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is not None:
                state, code = self._state(job)
                out[job_id] = SacctRecord(job_id, state, code, node_list="fakenode")
        return out

    def find(self, job_name: str, since_unix_s: float) -> list[str]:
        """Jobs by name."""
        return [j.job_id for j in self.jobs.values() if j.name == job_name]

    def result(self, job_id: str) -> tuple[str, Any] | None:
        """The result pickle of an ended job, per its fate."""
        self._advance()
        job = self.jobs[job_id]
        if job.end_s is None or job.cancelled:
            return None
        if job.fate == "ok":
            return ("success", self._report(job))
        if job.fate == "raise":
            return ("error", _trace(f"InjectedFault: injected failure for {job.request.label!r}"))
        if job.fate == "usr2":
            return (
                "error",
                _trace(
                    "submitit.core.utils.UncompletedJobError: Job not requeued because: "
                    "timed-out and not checkpointable."
                ),
            )
        return None

    def cancel(self, job_id: str) -> None:
        """scancel: ends a queued or running job now."""
        self._advance()
        job = self.jobs[job_id]
        if job.end_s is None:
            job.cancelled = True
            job.end_s = self.clock.now()
            job.start_s = job.start_s if job.start_s is not None else job.end_s

    def files(self, job_id: str) -> Any:
        """submitit's layout under ``folder`` (written on demand for logs)."""
        from llenergymeasure.study.slurm.submit import job_files

        files = job_files(self.folder, job_id)
        job = self.jobs.get(job_id)
        if job is not None and job.end_s is not None and job.fate == "oom":
            files.folder.mkdir(parents=True, exist_ok=True)
            files.stderr.write_text(
                "slurmstepd: error: StepId=1.0 exceeded memory limit (2 > 1), being killed\n"
            )
        return files

    # ---- simulation --------------------------------------------------------------------
    def _state(self, job: FakeJob) -> tuple[str, str]:
        if job.cancelled:
            return "CANCELLED by 0", "0:0"
        if job.start_s is None:
            return "PENDING", "0:0"
        if job.end_s is None:
            return "RUNNING", "0:0"
        return {
            "ok": ("COMPLETED", "0:0"),
            "raise": ("FAILED", "1:0"),
            "usr2": ("FAILED", "1:0"),
            "timeout": ("TIMEOUT", "0:0"),
            "cancel": ("CANCELLED by 0", "0:0"),
            "oom": ("FAILED", "0:9"),
            "node_fail": ("NODE_FAIL", "0:0"),
        }[job.fate]

    def _advance(self) -> None:
        """Process ends and starts in time order up to the clock's now."""
        now = self.clock.now()
        while True:
            self._start_waiting(self._t)
            running = [j for j in self.jobs.values() if j.start_s is not None and j.end_s is None]
            ends = [(j.start_s + self.duration_s, j) for j in running if j.start_s is not None]
            if not ends:
                break
            t_end, job = min(ends, key=lambda e: e[0])
            if t_end > now:
                break
            self._t = max(self._t, t_end)
            job.end_s = t_end
        self._t = max(self._t, now)
        self._start_waiting(self._t)

    def _start_waiting(self, t: float) -> None:
        busy = {
            g
            for j in self.jobs.values()
            if j.start_s is not None and j.end_s is None
            for g in j.gpus
        }
        for job in self.jobs.values():
            if job.start_s is not None or job.submitted_s > t:
                continue
            free = [g for g in range(self.n_gpus) if g not in busy or self.share_gpus]
            if len(free) < job.gpus_needed:
                break  # FIFO: later jobs wait behind it
            job.gpus = tuple(free[: job.gpus_needed])
            busy |= set(job.gpus)
            job.start_s = t

    def _report(self, job: FakeJob) -> Any:
        from llenergymeasure.clock import utc_now
        from llenergymeasure.config.hashing import config_hash
        from llenergymeasure.domain.results import ExperimentResult
        from llenergymeasure.results.persistence import new_run_dir, write_result
        from llenergymeasure.study.slurm.job import JobReport
        from llenergymeasure.study.worker import result_summary

        request = job.request
        if job.report is not None:
            return job.report

        result = ExperimentResult(
            experiment_id=f"fake{job.job_id}",
            name=request.config.name or "fake",
            config=request.config.model_dump(mode="json"),
            config_hash=config_hash(request.config),
            started_at=utc_now(),
            ended_at=utc_now(),
            measurement_window_s=self.duration_s,
        )
        run_dir = request.run_dir or new_run_dir(request.results_dir, result.name)
        path = write_result(result, run_dir)  # in the attempt's run dir, as a real job does
        gpus = ",".join(str(g) for g in job.gpus)
        report = JobReport(
            result_path=str(path.resolve()),
            summary=result_summary(result),
            host="fakenode",
            cuda_visible_devices=gpus,
            environ={"SLURM_JOB_ID": job.job_id, "SLURM_JOB_GPUS": gpus},
            started_at=datetime.datetime.fromtimestamp(job.start_s or 0.0, datetime.timezone.utc),
            ended_at=datetime.datetime.fromtimestamp(job.end_s or 0.0, datetime.timezone.utc),
        )
        job.report = report
        return report


def _trace(last_line: str) -> str:
    return (
        f'Traceback (most recent call last):\n  File "job.py", line 1, in <module>\n{last_line}\n'
    )
