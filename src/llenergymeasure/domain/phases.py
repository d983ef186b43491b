"""Energy by phase and by request: inputs (frozen dataclasses) and results (pydantic v2).

Inputs come from the backends' timestamps (docs/measurement.md section 9: per-step CUDA
events for pytorch, the engine step loop for vLLM), all on the energy layer's clock
(``time.monotonic``; ``time.perf_counter`` is the same CLOCK_MONOTONIC on Linux):

- :class:`PhaseSpan`: a stretch of time spent in one phase (``prefill``, ``decode``; time
  covered by no span is ``other``);
- :class:`StepTokens`: one engine step and the prefill / decode tokens it scheduled per request.

Results always say how they were obtained: ``method``, ``signal`` (which sensor), the
signal's ``resolution_s``, standard errors and 95 % confidence intervals, and
``not_measured`` with the reason instead of numbers when the window cannot say.
The statistics are in ``core/energy/phases.py`` and ``core/energy/per_request.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PREFILL = "prefill"
DECODE = "decode"
OTHER = "other"
MIXED = "mixed"  # an engine step that scheduled prefill and decode tokens together
PHASES = (PREFILL, DECODE, MIXED, OTHER)

PhaseMethod = Literal["counter_regression", "fine_signal_integral"]
Signal = Literal["energy_counter", "power_instant", "power_usage"]


# --- inputs -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PhaseSpan:
    """Time in one phase, [start_s, end_s), with the tokens it processed (0 = not counted)."""

    phase: str
    start_s: float
    end_s: float
    tokens: int = 0

    def __post_init__(self) -> None:
        if self.end_s < self.start_s:
            raise ValueError(f"span ends before it starts: {self.start_s} > {self.end_s}")


@dataclasses.dataclass(frozen=True)
class StepTokens:
    """One engine step: tokens scheduled per request, and who shares the step's time.

    ``resident``: the requests occupying the batch during the step (in a static batch a
    finished request still holds its slot); empty means every request named in the two maps.
    """

    start_s: float
    end_s: float
    prefill_tokens: Mapping[str, int] = dataclasses.field(default_factory=dict)
    decode_tokens: Mapping[str, int] = dataclasses.field(default_factory=dict)
    resident: tuple[str, ...] = ()

    def residents(self) -> tuple[str, ...]:
        """The requests that share this step's time."""
        if self.resident:
            return self.resident
        return tuple(dict.fromkeys([*self.prefill_tokens, *self.decode_tokens]))


# --- results ------------------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_Model):
    """A value with its standard error and confidence interval (``level``, default 95 %)."""

    value: float
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    level: float = 0.95


class PhaseEnergy(_Model):
    """One phase over the window: power, energy and energy per token, or why not."""

    phase: str
    duration_s: float
    tokens: int | None = None
    power_w: Estimate | None = None
    energy_j: Estimate | None = None
    j_per_token: Estimate | None = None
    not_measured: str | None = None
    notes: list[str] = Field(default_factory=list)


class FineSignalEstimate(_Model):
    """Second estimate: a fine power signal integrated over the phase spans."""

    method: PhaseMethod = "fine_signal_integral"
    signal: Signal
    resolution_s: float
    delay_s: float
    phases: dict[str, PhaseEnergy] = Field(default_factory=dict)
    total_energy_j: float | None = None
    vs_counter_pct: float | None = None  # 100 * (fine total - counter) / counter
    se_method: str = ""
    not_measured: str | None = None


class CounterTraceInfo(_Model):
    """How the window's counter trace was read (what it cost is in the sensor profile)."""

    device: str  # gpu:<nvml index>
    n_reads: int  # counter reads during the window
    n_kept: int  # reads kept: the two around each counter step (the others carry nothing)
    target_interval_s: float  # mean gap asked for between read starts (dithered)
    mean_interval_s: float | None = None  # achieved
    mean_read_s: float | None = None  # one read's duration
    fine_signal: Signal | None = None  # a power field read too (trusted by the profile)
    fine_interval_s: float | None = None
    n_fine_reads: int = 0


class PhaseEnergyReport(_Model):
    """``energy.phases``: the window's counter energy split into prefill, decode and other."""

    method: PhaseMethod = "counter_regression"
    signal: Signal = "energy_counter"
    resolution_s: float | None = None  # median counter interval
    window_s: float
    counter_energy_j: float | None = None  # what the phases are rescaled to sum to
    n_intervals: int = 0
    dof: int | None = None
    condition_number: float | None = None
    delay_s: float = 0.0
    averaging_window_s: float = 0.0
    edge_model: str | None = None
    se_method: str = ""
    phases: dict[str, PhaseEnergy] = Field(default_factory=dict)
    model_energy_j: float | None = None  # sum of power x time before rescaling
    residual_j: float | None = None  # counter - model
    residual_pct: float | None = None
    rescale_factor: float | None = None
    interval_rms_j: float | None = None
    sensor_profile: str | None = None
    method_reason: str | None = None  # why this method and these corrections (sensor profile)
    trace: CounterTraceInfo | None = None
    edge_counter_energy_j: float | None = None  # the meter's edge reads, for comparison
    fine_signal: FineSignalEstimate | None = None
    not_measured: str | None = None
    notes: list[str] = Field(default_factory=list)


class RequestEnergy(_Model):
    """One request's attributed energy."""

    request_id: str
    input_tokens: int
    output_tokens: int
    energy_j: float
    se_j: float | None = None
    time_share_s: float


class OutputLengthBin(_Model):
    """Mean energy of the requests whose output length falls in [low, high]."""

    output_tokens_low: int
    output_tokens_high: int
    n_requests: int
    mean_energy_j: float


class PerRequestEnergy(_Model):
    """``energy.per_request``: interval energy regressed on tokens and time, then shared out."""

    method: str = "token_time_regression"
    signal: Signal = "energy_counter"
    resolution_s: float | None = None
    terms: list[str] = Field(default_factory=list)  # model terms actually fitted
    coefficients: dict[str, Estimate] = Field(default_factory=dict)  # J/token, W
    sharing_rule: str = ""
    se_method: str = ""
    n_intervals: int = 0
    n_requests: int = 0
    window_s: float
    counter_energy_j: float | None = None
    sum_energy_j: float | None = None  # sum over requests (= counter_energy_j)
    residual_j: float | None = None  # counter - model, before rescaling
    residual_pct: float | None = None
    mean_j: float | None = None
    p50_j: float | None = None
    p99_j: float | None = None
    j_per_output_token_slope: Estimate | None = None  # J per request vs output length
    j_vs_output_tokens: list[OutputLengthBin] = Field(default_factory=list)
    requests: list[RequestEnergy] = Field(default_factory=list)
    not_measured: str | None = None
    notes: list[str] = Field(default_factory=list)


# --- sensor profiles ----------------------------------------------------------------------
class SignalProfile(_Model):
    """How one power signal of one GPU model behaves (from the square-wave benchmark)."""

    update_period_s: float | None = None
    phase_jitter_s: float | None = None  # steps vs a fitted regular grid (counter)
    delay_s: float | None = None  # reading lags the load by this much
    averaging_window_s: float | None = None  # trailing window the reading averages over
    response: Literal["boxcar", "exponential"] | None = None
    read_cost_s: float | None = None
    fit_r2: float | None = None
    trusted_for_phases: bool = False  # fine enough to integrate over phase spans


class TraceCost(_Model):
    """What the fast counter trace costs the workload on one GPU model (alternated on/off
    windows of the same workload, ``benchmarks/gpu_phase_energy.py``)."""

    throughput_ratio: float  # median tokens/s with the trace / without
    ci_low: float | None = None
    ci_high: float | None = None
    level: float = 0.95
    n_pairs: int = 0
    workload: str = ""  # what was run (model, batch, tokens)
    read_interval_s: float | None = None  # the trace's mean read interval in those windows
    measured_with: str | None = None


class SensorProfile(_Model):
    """Sensor behaviour per GPU model; ``status`` says whether the numbers were measured."""

    gpu_name: str
    status: Literal["measured", "not_measured"] = "not_measured"
    measured_with: str | None = None  # tool and settings, e.g. the benchmark's --quick
    driver_version: str | None = None
    signals: dict[str, SignalProfile] = Field(default_factory=dict)
    counter_trace_cost: TraceCost | None = None  # None: not measured on this GPU model
    notes: list[str] = Field(default_factory=list)

    def signal(self, name: str) -> SignalProfile:
        """The profile of one signal (an empty, untrusted one when not characterised)."""
        return self.signals.get(name, SignalProfile())
