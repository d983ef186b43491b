"""Energy result models (pydantic v2).

Every energy figure names how it was obtained (``method``) and what it covers (``scope``):

- ``method``: ``counter`` (a hardware energy counter read at the window edges: NVML total
  energy, RAPL), ``polled`` (power samples integrated with the trapezoid rule), or
  ``estimate`` (a model such as TDP x utilisation: not a measurement).
- ``scope``: ``gpu``, ``cpu_package`` or ``dram``.

A scope that could not be measured is listed in ``EnergyReport.not_measured`` with a reason;
it is never reported as zero.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llenergymeasure.domain.phases import PerRequestEnergy, PhaseEnergyReport

Scope = Literal["gpu", "cpu_package", "dram"]
Method = Literal["counter", "polled", "estimate"]
Severity = Literal["info", "warning", "critical"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QualityFlag(_Model):
    """One reason to trust a result less, with how much (``severity``)."""

    code: str  # e.g. "short_window", "counter_reset"
    message: str
    severity: Severity = "warning"


class EnergyMeasurement(_Model):
    """Energy of one window, one scope, one method, broken down per device.

    Device keys: ``gpu:<nvml index>``, ``cpu:package-<n>``, ``dram:<n>``, ``cpu:all``.
    """

    meter: str
    window: str
    scope: Scope
    method: Method
    energy_j_by_device: dict[str, float]
    energy_j: float
    duration_s: float
    warnings: list[str] = Field(default_factory=list)

    @classmethod
    def from_devices(
        cls,
        *,
        meter: str,
        window: str,
        scope: Scope,
        method: Method,
        energy_j_by_device: dict[str, float],
        duration_s: float,
        warnings: list[str] | None = None,
    ) -> EnergyMeasurement:
        """Build a measurement whose total is the sum over its devices."""
        return cls(
            meter=meter,
            window=window,
            scope=scope,
            method=method,
            energy_j_by_device=dict(energy_j_by_device),
            energy_j=float(sum(energy_j_by_device.values())),
            duration_s=duration_s,
            warnings=list(warnings or []),
        )


class NotMeasured(_Model):
    """A scope (or one device of it) that a meter could not measure, and why."""

    meter: str
    scope: Scope
    reason: str
    device: str | None = None


class IdleBaseline(_Model):
    """Idle power of the GPUs in use, measured with nothing running.

    Caveat: idle power drifts with temperature, clocks and with what else runs on the host; a
    cached value (``cached=True``) may be up to ``cache_ttl_s`` old. A GPU on which some
    process holds a CUDA context stays at full clock and idles far higher than one with none,
    so ``compute_processes`` is recorded and is part of ``key``. The state fields come from
    the telemetry sampler over the baseline window (None without one, and in baselines cached
    by older versions): ``settled`` is False when power drifted more than
    ``quality.BASELINE_SETTLED_PCT`` between the first and last third of the window.
    """

    key: str  # "<host>/", sorted GPU UUIDs joined by ",", then "|context", "|no-context" or "|unknown"
    idle_power_w: float
    idle_power_w_by_device: dict[str, float]
    duration_s: float
    method: Method
    measured_at_unix_s: float
    cached: bool = False
    compute_processes: int | None = None  # on the GPUs in use, just before the window
    sm_clock_mhz: float | None = None  # mean over the window and the GPUs
    temperature_c: float | None = None  # mean over the window and the GPUs
    power_trend_pct: float | None = None  # 100 x (last third - first third) / first third
    settled: bool | None = None  # abs(power_trend_pct) <= BASELINE_SETTLED_PCT


class BaselineAdjustment(_Model):
    """Gross GPU energy split into idle and above-idle parts. Gross is always kept."""

    baseline: IdleBaseline
    idle_power_w: float
    gross_energy_j: float
    idle_energy_j: float
    energy_above_idle_j: float  # max(0, gross - idle); see ``clamped``
    clamped: bool = False
    note: str | None = None


class ThermalSummary(_Model):
    """What the telemetry sampler saw over a window (all GPUs in use)."""

    sample_count: int
    sample_interval_ms: float
    max_temperature_c: float | None = None
    max_temperature_c_by_device: dict[str, float] = Field(default_factory=dict)
    temperature_rise_c: float | None = None
    throttle_s_by_reason: dict[str, float] = Field(default_factory=dict)
    sm_clock_start_mhz: float | None = None
    sm_clock_end_mhz: float | None = None
    sm_clock_drift_pct: float | None = None
    mean_power_w: float | None = None
    peak_memory_used_mb_by_device: dict[str, float] = Field(
        default_factory=dict,
        description="NVML device memory used (every process on the GPU), max over the "
        "window's samples, decimal MB",
    )


class MeterSelection(_Model):
    """Which meters measured, what was asked for, and why these were chosen."""

    requested: str
    meters: list[str]
    reason: str
    unavailable: dict[str, str] = Field(default_factory=dict)  # meter -> why not used


class EnergyReport(_Model):
    """Everything the energy layer knows about one measurement window."""

    window: str
    duration_s: float
    measurements: list[EnergyMeasurement] = Field(default_factory=list)
    gpu_energy_j: float | None = None
    cpu_energy_j: float | None = None
    dram_energy_j: float | None = None
    not_measured: dict[str, str] = Field(default_factory=dict)
    baseline: BaselineAdjustment | None = None
    polled_gpu_energy_j: float | None = None
    polled_gpu_energy_j_by_device: dict[str, float] = Field(default_factory=dict)
    counter_vs_polled_pct: float | None = None  # 100 * (polled - counter) / counter
    thermal: ThermalSummary | None = None
    meter_selection: MeterSelection
    gpu_update_period_ms_by_device: dict[str, float] = Field(default_factory=dict)
    warnings: list[QualityFlag] = Field(default_factory=list)
    # energy by phase and per request (docs/measurement.md section 14); None: not attributed
    # (results of older versions); a report with ``not_measured`` says why not
    phases: PhaseEnergyReport | None = None
    per_request: PerRequestEnergy | None = None

    @property
    def total_energy_j(self) -> float | None:
        """Sum of the measured scopes (None when nothing was measured)."""
        parts = [
            e for e in (self.gpu_energy_j, self.cpu_energy_j, self.dram_energy_j) if e is not None
        ]
        return float(sum(parts)) if parts else None
