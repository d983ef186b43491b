"""Turn what one measured run produced into a RawProcessResult (pure bookkeeping).

Kept apart from the orchestrator so the lifecycle code there stays short; nothing here runs
while the measurement window is open.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llenergymeasure.core.memory import weights_bytes, weights_precision
from llenergymeasure.core.metrics import bytes_to_mb, kv_cache_bytes
from llenergymeasure.domain.energy import EnergyReport, QualityFlag
from llenergymeasure.domain.metrics import MemoryMetrics
from llenergymeasure.domain.results import (
    RawProcessResult,
    RunnerContext,
    WarmupResult,
    core_fields,
)
from llenergymeasure.results.derive import to_records

if TYPE_CHECKING:
    from datetime import datetime

    from llenergymeasure.catalogue.architectures import ArchitectureSpec
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.backends.protocol import InferenceOutput, PreparedBatches
    from llenergymeasure.domain.environment import EnvironmentSnapshot, Placement


class PhaseTimer:
    """Wall time of each named phase outside (and of) the window, in seconds."""

    def __init__(self) -> None:
        self.durations_s: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def start(self, name: str) -> None:
        """End the current phase (if any) and start ``name``."""
        self.stop()
        self._name, self._t0 = name, time.perf_counter()

    def stop(self) -> None:
        """End the current phase."""
        if self._name is not None:
            elapsed = time.perf_counter() - self._t0
            self.durations_s[self._name] = self.durations_s.get(self._name, 0.0) + elapsed
            self._name = None

    def add(self, name: str, seconds: float) -> None:
        """Record a duration measured elsewhere (e.g. the process's start) as ``name``."""
        self.durations_s[name] = self.durations_s.get(name, 0.0) + max(0.0, seconds)

    def carve(self, name: str, out_of: str, seconds: float) -> None:
        """Move ``seconds`` of the (finished) phase ``out_of`` into ``name``: a sub-phase
        that a callee timed itself (an engine's start inside the model load)."""
        moved = min(max(0.0, seconds), self.durations_s.get(out_of, 0.0))
        if moved > 0:
            self.durations_s[out_of] -= moved
            self.add(name, moved)

    def total_s(self, *names: str) -> float:
        """Sum of the named phases (missing ones count 0)."""
        return sum(self.durations_s.get(n, 0.0) for n in names)


@dataclass
class Window:
    """The measurement window's edges: wall clock and ``time.monotonic`` (alignment across
    the processes of a host) and ``perf_counter`` (length)."""

    start_unix_s: float = 0.0
    end_unix_s: float = 0.0
    start_perf_s: float = 0.0
    end_perf_s: float = 0.0
    start_monotonic_s: float = 0.0
    end_monotonic_s: float = 0.0

    def begin(self) -> None:
        """Stamp the opening edge."""
        self.start_unix_s, self.start_monotonic_s = time.time(), time.monotonic()
        self.start_perf_s = time.perf_counter()

    def end(self) -> None:
        """Stamp the closing edge."""
        self.end_perf_s = time.perf_counter()
        self.end_monotonic_s, self.end_unix_s = time.monotonic(), time.time()

    @property
    def duration_s(self) -> float:
        """Window length on the monotonic clock."""
        return self.end_perf_s - self.start_perf_s


@dataclass
class RunRecord:
    """Everything the orchestrator gathered for one process, before aggregation.

    Its attributes named like :class:`~llenergymeasure.domain.results.ResultCore` fields are
    copied into every result built from it (``core_fields``), failed or not.
    """

    experiment_id: str
    name: str
    config: dict[str, Any]
    config_hash: str
    provenance: dict[str, str]
    started_at: datetime
    environment: EnvironmentSnapshot | None = None
    placement: Placement | None = None
    warmup: WarmupResult | None = None
    dataset_info: dict[str, Any] | None = None
    energy: EnergyReport | None = None
    energy_not_measured_reason: str | None = None
    warnings: list[QualityFlag] = field(default_factory=list)
    runner: RunnerContext | None = None
    carbon_intensity_gco2_kwh: float | None = None
    datacenter_pue: float | None = None


def memory_metrics(
    config: ExperimentConfig,
    arch: ArchitectureSpec | None,
    prepared: PreparedBatches,
    output: InferenceOutput,
    energy: EnergyReport | None = None,
) -> MemoryMetrics:
    """Memory figures, each with its method.

    Peak: what the backend measured (pytorch: its allocator); for an engine whose memory
    lives in other processes (vLLM), the device-level peak from the telemetry samples of the
    window (``energy.thermal``). Weights: analytic from the shapes. KV cache: the analytic
    estimate, and what the engine reserved when it says so.
    """
    model_mb = kv_mb = None
    model_method = None
    if arch is not None:
        precision = weights_precision(config)
        model_mb = bytes_to_mb(weights_bytes(arch, precision))
        model_method = f"analytic: {arch.n_params:,} parameters x bytes per parameter ({precision})"
        batch = max((b.size for b in prepared.batches), default=0)
        seq = max((b.padded_length for b in prepared.batches), default=0) + prepared.max_new_tokens
        elem = 4.0 if config.precision == "fp32" else 2.0
        kv_mb = bytes_to_mb(kv_cache_bytes(arch, batch, seq, elem))
    peak_mb, method, why = _peak_memory(output, energy)
    reserved = output.kv_cache_reserved_bytes
    return MemoryMetrics(
        model_memory_mb=model_mb,
        model_memory_method=model_method,
        peak_memory_mb=peak_mb,
        peak_memory_method=method,
        peak_memory_not_measured=why,
        kv_cache_estimate_mb=kv_mb,
        kv_cache_reserved_mb=bytes_to_mb(reserved) if reserved is not None else None,
        kv_cache_reserved_method=output.kv_cache_reserved_method,
        device=output.device,
    )


DEVICE_PEAK_METHOD = (
    "device-level: NVML memory used on {devices} (every process on the GPU: weights, "
    "pre-allocated KV cache, CUDA context, other programs), max of the telemetry samples in "
    "the window, summed over GPUs"
)


def _peak_memory(
    output: InferenceOutput, energy: EnergyReport | None
) -> tuple[float | None, str | None, str | None]:
    """(peak MB, method, why not measured)."""
    if output.peak_memory_bytes is not None:
        return bytes_to_mb(output.peak_memory_bytes), output.peak_memory_method, None
    if output.peak_memory_source != "device_telemetry":
        return None, None, output.peak_memory_not_measured_reason
    thermal = energy.thermal if energy is not None else None
    by_device = thermal.peak_memory_used_mb_by_device if thermal is not None else {}
    if not by_device:
        return (
            None,
            None,
            (
                "no telemetry sample of device memory in the window (sampler off or not "
                "started, window shorter than one sample interval, or NVML unavailable)"
            ),
        )
    devices = ", ".join(sorted(by_device))
    return sum(by_device.values()), DEVICE_PEAK_METHOD.format(devices=devices), None


def raw_result(
    record: RunRecord,
    output: InferenceOutput,
    window: Window,
    memory: MemoryMetrics,
    ended_at: datetime,
    *,
    process_index: int = 0,
    n_processes: int = 1,
    gpu_devices: Sequence[str] = (),
    cuda_visible_devices: str | None = None,
) -> RawProcessResult:
    """The raw result of this process (the only one, or worker ``process_index`` of
    ``n_processes``)."""
    return RawProcessResult(
        **core_fields(record),
        process_index=process_index,
        n_processes=n_processes,
        device=output.device,
        gpu_devices=list(gpu_devices),
        cuda_visible_devices=cuda_visible_devices,
        window_start_unix_s=window.start_unix_s,
        window_end_unix_s=window.end_unix_s,
        window_start_monotonic_s=window.start_monotonic_s or None,
        window_end_monotonic_s=window.end_monotonic_s or None,
        duration_s=window.duration_s,
        timing_method=output.timing_method,
        ttft_not_measured_reason=output.ttft_not_measured_reason,
        timings=to_records(output.timings),
        # per-token times are missing then: the batch wall times are the only latency data
        batch_durations_s=list(output.batch_durations_s)
        if output.timing_method == "e2e_only"
        else [],
        padded_input_tokens=output.padded_input_tokens,
        backend_details=dict(output.backend_details),
        memory=memory,
        carbon_intensity_gco2_kwh=record.carbon_intensity_gco2_kwh,
        datacenter_pue=record.datacenter_pue,
        ended_at=ended_at,
    )


def backend_flags(messages: list[str], code: str = "backend_note") -> list[QualityFlag]:
    """Backend warnings as informational quality flags."""
    return [QualityFlag(code=code, message=m, severity="info") for m in messages]
