"""Result models: ExperimentResult (one experiment) and RawProcessResult (one process of it).

Both are versioned pydantic v2 models that embed the effective config, its provenance and the
environment, and round-trip through ``model_dump_json`` / ``model_validate_json``.
A multi-process run writes one :class:`RawProcessResult` per process
(``raw/process_<i>.json``) and the launching process's :class:`LaunchRecord`
(``raw/launch.json``); they are combined late (pooled timings, energy summed over distinct
devices) by :func:`llenergymeasure.results.aggregation.aggregate_process_results`, whose
:class:`ExperimentResult` keeps a per-process and a per-device breakdown.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llenergymeasure.domain.co2 import CO2Estimate
from llenergymeasure.domain.energy import EnergyReport, Method, QualityFlag, Scope
from llenergymeasure.domain.environment import EnvironmentSnapshot, Placement
from llenergymeasure.domain.metrics import InferenceMetrics, MemoryMetrics
from llenergymeasure.state.machine import ExperimentState, StateTransition

SCHEMA_VERSION = "2.0"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WarmupResult(_Model):
    """What the warm-up did before the window (docs/measurement.md §7)."""

    mode: Literal["fixed", "cv", "disabled"]
    runs: int = Field(ge=0, description="warm-up generations run")
    converged: bool | None = Field(None, description="cv mode: CV fell under the threshold")
    final_cv: float | None = Field(None, description="CV of the last `window` latencies")
    cv_threshold: float | None = None
    window: int | None = Field(None, description="latencies the CV was computed over")
    latencies_s: list[float] = Field(default_factory=list)
    first_call_s: float | None = Field(
        None,
        description="the first call's latency: it carries the one-time costs (CUDA kernels "
        "loaded, cuBLAS workspaces, kernel selection, compilation)",
    )
    steady_call_s: float | None = Field(
        None, description="median latency of the calls after the first (None with one call)"
    )
    duration_s: float = Field(0.0, ge=0.0, description="wall time of the whole warm-up")
    thermal_floor_s: float = Field(0.0, ge=0.0, description="minimum warm-up time asked for")
    thermal_floor_waited_s: float = Field(
        0.0, ge=0.0, description="extra time spent warming up only to reach the thermal floor"
    )

    @property
    def one_time_s(self) -> float | None:
        """What the first call cost beyond a steady one (None without two calls)."""
        first = self.first_call_s if self.first_call_s is not None else None
        if first is None and self.latencies_s:
            first = self.latencies_s[0]
        steady = self.steady_call_s
        if steady is None and len(self.latencies_s) > 1:
            steady = statistics.median(self.latencies_s[1:])
        return max(0.0, first - steady) if first is not None and steady is not None else None


class RequestTimingRecord(_Model):
    """Serialisable twin of ``core.metrics.RequestTiming`` (seconds, one process's clock)."""

    request_start_s: float
    token_times_s: list[float] = Field(default_factory=list)
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    queue_s: float | None = Field(None, ge=0.0, description="engine scheduling delay (vLLM)")


class RunnerContext(_Model):
    """How an experiment was run: in the llem process tree (``local``) or in a container.

    A study picks a runner per backend (user config ``runners:``); a container runner
    records the image it ran and that image's digest, so two results can be told apart
    by the software they ran on even when their ``environment`` looks the same.
    """

    kind: Literal["local", "docker"] = "local"
    spec: str = Field("local", description="the user config's runner: local | docker:<image>")
    image: str | None = Field(None, description="the image reference the container ran")
    image_id: str | None = Field(
        None, description="the image's content digest (sha256:..., `docker image inspect` Id)"
    )
    image_repo_digests: list[str] = Field(
        default_factory=list,
        description="registry digests (repo@sha256:...); empty for an image built locally",
    )
    container_name: str | None = None
    gpu_devices: list[str] | None = Field(
        None,
        description="host GPUs routed into the container (--gpus device=...); None: none "
        "routed (CPU) or all",
    )

    @property
    def in_container(self) -> bool:
        """Whether the experiment ran in a container started for it."""
        return self.kind != "local"


class ResultCore(_Model):
    """The fields every result of an experiment carries: a per-process raw result, the
    aggregated result and a failed run's result alike. A field added here is added to all
    three; :func:`core_fields` copies them from whatever gathered them, by name."""

    schema_version: str = SCHEMA_VERSION
    experiment_id: str
    name: str
    config: dict[str, Any] = Field(description="effective ExperimentConfig (model_dump)")
    provenance: dict[str, str] = Field(
        default_factory=dict, description="field path -> default|user_config|file|cli"
    )
    config_hash: str
    environment: EnvironmentSnapshot | None = None
    placement: Placement | None = Field(
        None, description="node, CUDA_VISIBLE_DEVICES and batch job the experiment ran in"
    )
    energy: EnergyReport | None = None
    energy_not_measured_reason: str | None = None
    warmup: WarmupResult | None = None
    dataset_info: dict[str, Any] | None = Field(
        None, description="where the prompts came from: source, n, n_available, cycled, notes"
    )
    warnings: list[QualityFlag] = Field(default_factory=list)
    runner: RunnerContext | None = Field(
        None, description="how it was run: local, or a container (image, digest); None: older"
    )
    started_at: datetime
    ended_at: datetime | None = None


def core_fields(source: object) -> dict[str, Any]:
    """The :class:`ResultCore` fields that ``source`` has (a run record, a raw result), by
    name; ``schema_version`` is left to the model being built."""
    names = [n for n in ResultCore.model_fields if n != "schema_version"]
    return {n: getattr(source, n) for n in names if hasattr(source, n)}


class RawProcessResult(ResultCore):
    """The raw measurement of one process of an experiment, before aggregation.

    ``window_start_unix_s`` / ``window_end_unix_s`` are wall-clock times (``time.time``) and
    ``window_*_monotonic_s`` the same edges on ``time.monotonic`` (one clock for every process
    of a host, immune to wall-clock steps), so windows of different processes can be aligned;
    per-token times are only ever compared within one request. ``energy`` is the energy of
    the devices this process ran on over the run's energy window (a launched worker gets it
    from the parent, which owns the meters): a device shared by two processes appears in
    both, and aggregation counts it once.
    """

    process_index: int = Field(0, ge=0)
    n_processes: int = Field(1, ge=1)
    device: str | None = None
    gpu_devices: list[str] = Field(
        default_factory=list,
        description="GPUs this process ran on, as gpu:<nvml index> (empty on CPU)",
    )
    cuda_visible_devices: str | None = Field(
        None, description="CUDA_VISIBLE_DEVICES of this process (launched workers: its own)"
    )
    window_start_unix_s: float
    window_end_unix_s: float
    window_start_monotonic_s: float | None = Field(
        None, description="time.monotonic() at the window start (comparable within one host)"
    )
    window_end_monotonic_s: float | None = None
    duration_s: float = Field(gt=0.0, description="this process's window (monotonic clock)")
    timing_method: str = Field(
        "host_clock",
        description=(
            "where token times come from: cuda_events (per decode step, GPU), host_clock "
            "(per step, CPU), engine_steps (vLLM: host stamp per engine step, TTFT from the "
            "engine's statistics), e2e_only (no per-token times)"
        ),
    )
    ttft_not_measured_reason: str | None = None
    timings: list[RequestTimingRecord] = Field(default_factory=list)
    batch_durations_s: list[float] = Field(
        default_factory=list, description="e2e_only: wall time of each batch's generate call"
    )
    padded_input_tokens: int | None = None
    backend_details: dict[str, Any] = Field(
        default_factory=dict,
        description="engine facts: version, settings in effect, KV blocks, prefix-cache hits",
    )
    memory: MemoryMetrics | None = None
    carbon_intensity_gco2_kwh: float | None = None
    datacenter_pue: float | None = None


ProcessStatus = Literal["completed", "failed", "crashed", "stopped", "not_started"]


class ProcessOutcome(_Model):
    """What the launcher gave one worker process and how that worker ended."""

    process_index: int = Field(ge=0)
    status: ProcessStatus
    reason: str | None = Field(None, description="why it did not complete (one line)")
    detail: str | None = Field(None, description="traceback text, when the worker sent one")
    stage: str | None = Field(None, description="the last stage the worker reported")
    exit_code: int | None = None
    gpu_devices: list[str] = Field(default_factory=list, description="GPUs assigned to it")
    cuda_visible_devices: str | None = Field(None, description="what it was started with")


class LaunchRecord(ResultCore):
    """The launching (parent) process's part of a run with worker processes:
    ``raw/launch.json``, written before aggregation so that ``llem aggregate`` can rebuild
    ``result.json`` from the run directory alone.

    ``energy`` is the parent's whole energy report (every GPU it measured, ``gpu:<index>``);
    the raw results carry the part of it that belongs to their devices.
    """

    n_processes: int = Field(ge=1)
    processes: list[ProcessOutcome] = Field(default_factory=list)
    start_barrier: str | None = Field(
        None, description="how the workers were released together (e.g. gloo barrier)"
    )
    llem_version: str | None = None
    state: ExperimentState = ExperimentState.DONE
    state_transitions: list[StateTransition] = Field(default_factory=list)
    timeseries_path: str | None = None
    setup_s: float | None = None
    phase_durations_s: dict[str, float] = Field(default_factory=dict)


class ProcessBreakdown(_Model):
    """One process of an aggregated run: its window and work, or why it is missing."""

    process_index: int = Field(ge=0)
    status: Literal["completed", "missing"]
    reason: str | None = Field(None, description="missing: why (from the launcher if known)")
    result_file: str | None = Field(None, description="its raw result, relative to the run")
    device: str | None = None
    gpu_devices: list[str] = Field(default_factory=list)
    cuda_visible_devices: str | None = None
    window_start_unix_s: float | None = None
    window_end_unix_s: float | None = None
    duration_s: float | None = None
    n_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_per_s: float | None = Field(None, description="over its own window")
    warmup_runs: int | None = None


class DeviceBreakdown(_Model):
    """One measured device of an aggregated run: its energy and who ran on it."""

    device: str = Field(description="gpu:<nvml index>, cpu:package-<n>, dram:<n>, cpu:all")
    scope: Scope
    method: Method
    meter: str
    energy_j: float
    processes: list[int] = Field(
        default_factory=list, description="processes whose raw results carry this device"
    )
    counted: bool = Field(description="part of the aggregate's energy")
    note: str | None = None


class ExperimentResult(ResultCore):
    """Everything one experiment measured, with the config and environment it ran under.

    ``energy`` is None when no meter could measure (``energy_not_measured_reason`` says
    why); a scope a meter could not measure is in ``energy.not_measured``: never zero.
    ``metrics`` is None only for a run that failed before its window closed.
    """

    llem_version: str | None = None
    metrics: InferenceMetrics | None = None
    co2: CO2Estimate | None = None
    timeseries_path: str | None = Field(None, description="relative to the run directory")
    run_dir: str | None = Field(
        None, description="the run directory holding result.json (set when it is written)"
    )
    timing_method: str | None = None
    batch_durations_s: list[float] = Field(
        default_factory=list,
        description=(
            "timing_method e2e_only (e.g. beam search): wall time of each batch's generate "
            "call in s, the E2E latency of every request in that batch (processes in order)"
        ),
    )
    backend_details: dict[str, Any] = Field(
        default_factory=dict,
        description="engine facts (vLLM: version, scheduler settings, KV cache reserved, "
        "prefix-cache hits in the window); of process 0",
    )
    n_processes: int = Field(1, ge=1)
    process_results: list[str] = Field(
        default_factory=list, description="raw per-process result files (relative)"
    )
    process_breakdown: list[ProcessBreakdown] = Field(
        default_factory=list,
        description="multi-process runs: every planned process, completed or missing",
    )
    device_breakdown: list[DeviceBreakdown] = Field(
        default_factory=list,
        description="multi-process runs: energy per device and the processes that ran on it",
    )
    state: ExperimentState = ExperimentState.DONE
    state_transitions: list[StateTransition] = Field(default_factory=list)
    failed: bool = False
    error: str | None = Field(None, description="traceback text of a failed run")
    error_type: str | None = None
    measurement_window_s: float | None = Field(None, description="inference window length")
    setup_s: float | None = Field(
        None, description="time outside the window: load + tokenise + warm-up + baseline"
    )
    phase_durations_s: dict[str, float] = Field(default_factory=dict)

    # ---- convenience (used by studies and the CLI) ---------------------------------------
    @property
    def partial(self) -> bool:
        """Some planned processes left no result: the figures cover the others only."""
        return any(p.status == "missing" for p in self.process_breakdown)

    @property
    def energy_j(self) -> float | None:
        """GPU energy of the window (J); falls back to the total measured (CPU/DRAM)."""
        if self.energy is None:
            return None
        if self.energy.gpu_energy_j is not None:
            return self.energy.gpu_energy_j
        return self.energy.total_energy_j

    @property
    def j_per_output_token(self) -> float | None:
        """Joules per generated token (gross energy), None when not measured."""
        ratios = self.metrics.energy_ratios if self.metrics else None
        return ratios.j_per_output_token if ratios else None

    @property
    def output_tokens_per_s(self) -> float | None:
        """Generated tokens per second over the window."""
        return self.metrics.throughput.output_tokens_per_s if self.metrics else None

    @property
    def ttft_ms_mean(self) -> float | None:
        """Mean time to first token (ms), None when not measured."""
        ttft = self.metrics.latency.ttft if self.metrics else None
        return ttft.mean_ms if ttft else None

    @property
    def itl_ms_mean(self) -> float | None:
        """Mean inter-token latency over pooled gaps (ms), None when not measured."""
        itl = self.metrics.latency.itl if self.metrics else None
        return itl.mean_ms if itl else None

    @property
    def mean_power_w(self) -> float | None:
        """Mean power over the window from ``energy_j`` / window length."""
        energy, window = self.energy_j, self.measurement_window_s
        return energy / window if energy is not None and window else None
