"""Sensor profiles per GPU model, and what they make the phase attribution use at run time.

``sensor_profiles.json`` (next to this module) holds one ``domain.phases.SensorProfile`` per
GPU model name as NVML reports it (``nvmlDeviceGetName``), written by
``benchmarks/gpu_sensor_characterise.py`` (its output has the same layout, so it merges
directly: :func:`merge_profiles`). A model that was never characterised gets the
``unknown`` profile: counter regression without delay or averaging correction, and no fine
power signal (docs/measurement.md, sections 2-3, on what the signals are).
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from llenergymeasure.domain.phases import SensorProfile, TraceCost

SCHEMA_VERSION = 1
UNKNOWN = "unknown"
COUNTER = "energy_counter"
FINE_SIGNALS = ("power_instant", "power_usage")  # preference order
TRACE_READS_PER_PERIOD = 25  # counter trace: ~4 ms reads at a 100 ms counter
MIN_TRACE_THROUGHPUT_RATIO = 0.99  # auto traces where the trace costs at most 1 % of tok/s
MIN_TRACE_CI_LOW = 0.98  # ... and its 95 % CI rules out a cost above 2 %


@dataclasses.dataclass(frozen=True)
class PhaseMethodChoice:
    """What the phase attribution uses for a GPU model, and why."""

    profile: str
    counter_delay_s: float
    counter_window_s: float
    fine_signal: str | None
    fine_delay_s: float
    counter_trace_interval_s: float | None
    reason: str


def _read(path: Path | None) -> dict[str, Any]:
    if path is None:
        text = resources.files("llenergymeasure.core.energy").joinpath("sensor_profiles.json")
        data: dict[str, Any] = json.loads(text.read_text())
    else:
        data = json.loads(Path(path).read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"sensor profiles: schema_version {data.get('schema_version')} != 1")
    return data


@cache
def _bundled() -> dict[str, SensorProfile]:
    return load_profiles_from(None)


def load_profiles_from(path: Path | None) -> dict[str, SensorProfile]:
    """All profiles in a profiles file (None: the bundled one), by GPU model name."""
    return {k: SensorProfile.model_validate(v) for k, v in _read(path)["profiles"].items()}


def profile_for(gpu_name: str, profiles: dict[str, SensorProfile] | None = None) -> SensorProfile:
    """The profile of a GPU model: exact name, else the longest profile name it contains,
    else the ``unknown`` fallback (renamed to ``gpu_name``, status not measured)."""
    table = _bundled() if profiles is None else profiles
    if gpu_name in table:
        return table[gpu_name]
    matches = [k for k in table if k != UNKNOWN and k in gpu_name]
    if matches:
        best = table[max(matches, key=len)]
        note = f"profile of {best.gpu_name!r} used for {gpu_name!r} (matched by name)"
        return best.model_copy(update={"notes": [*best.notes, note]})
    fallback = table.get(UNKNOWN) or SensorProfile(gpu_name=UNKNOWN)
    return fallback.model_copy(update={"gpu_name": gpu_name})


def choose_method(profile: SensorProfile) -> PhaseMethodChoice:
    """Counter regression always; its delay/averaging and a fine signal only when measured."""
    if profile.status != "measured":
        return PhaseMethodChoice(
            profile=profile.gpu_name, counter_delay_s=0.0, counter_window_s=0.0,
            fine_signal=None, fine_delay_s=0.0, counter_trace_interval_s=None,
            reason=f"sensor of {profile.gpu_name!r} not characterised: counter regression "
            "without delay or averaging correction, no fine power signal",
        )  # fmt: skip
    counter = profile.signal(COUNTER)
    fine = next((s for s in FINE_SIGNALS if profile.signal(s).trusted_for_phases), None)
    period = counter.update_period_s
    return PhaseMethodChoice(
        profile=profile.gpu_name,
        counter_delay_s=counter.delay_s or 0.0,
        counter_window_s=counter.averaging_window_s or 0.0,
        fine_signal=fine,
        fine_delay_s=(profile.signal(fine).delay_s or 0.0) if fine else 0.0,
        counter_trace_interval_s=period / TRACE_READS_PER_PERIOD if period else None,
        reason=f"measured profile of {profile.gpu_name!r}"
        + (f"; fine signal {fine} trusted" if fine else "; no fine signal trusted"),
    )


def trace_is_free(profile: SensorProfile) -> tuple[bool, str]:
    """Whether ``telemetry.phase_energy: auto`` traces the counter on this GPU model, and why.

    Yes when the profile has a measured trace cost (alternated on/off windows) whose median
    throughput ratio is at least :data:`MIN_TRACE_THROUGHPUT_RATIO` and whose 95 % CI's lower
    end is at least :data:`MIN_TRACE_CI_LOW`: a median alone, over a few noisy pairs, does not
    show that the trace is free (docs/measurement.md section 14).
    """
    cost = profile.counter_trace_cost
    anyway = "set telemetry.phase_energy: on to attribute anyway"
    if cost is None:
        return False, (
            f"the counter trace's cost on {profile.gpu_name!r} is not measured yet "
            f"(benchmarks/gpu_phase_energy.py); {anyway}"
        )
    ci = (
        f" [{cost.ci_low:.4f}, {cost.ci_high:.4f}]"
        if cost.ci_low is not None and cost.ci_high is not None
        else ""
    )
    text = f"trace on/off throughput ratio {cost.throughput_ratio:.4f}{ci} ({cost.n_pairs} pairs)"
    if cost.throughput_ratio < MIN_TRACE_THROUGHPUT_RATIO:
        return False, (
            f"{text} on {profile.gpu_name!r} is below {MIN_TRACE_THROUGHPUT_RATIO}: the trace "
            f"slows the workload; {anyway}"
        )
    if cost.ci_low is None or cost.ci_low < MIN_TRACE_CI_LOW:
        return False, (
            f"{text} on {profile.gpu_name!r}: its 95 % CI does not rule out a cost above "
            f"{100 * (1 - MIN_TRACE_CI_LOW):.0f} % (lower end below {MIN_TRACE_CI_LOW}); "
            f"measure it with more pairs, or {anyway}"
        )
    return True, (
        f"{text} on {profile.gpu_name!r}: free enough (median >= {MIN_TRACE_THROUGHPUT_RATIO}, "
        f"CI >= {MIN_TRACE_CI_LOW})"
    )


def merge_profiles(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``base`` with every profile of ``new`` added or replaced (both in the file layout).

    A new profile without a trace cost keeps the one ``base`` had (the sensor benchmark and
    the trace-cost benchmark each measure their part).
    """
    for data in (base, new):
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError("sensor profiles: schema_version must be 1")
    profiles: dict[str, Any] = dict(base["profiles"])
    for name, prof in new["profiles"].items():
        merged = SensorProfile.model_validate(prof)
        kept = profiles.get(name, {}).get("counter_trace_cost")
        if merged.counter_trace_cost is None and kept is not None:  # a re-characterised
            merged = merged.model_copy(
                update={"counter_trace_cost": TraceCost.model_validate(kept)}
            )
        profiles[name] = merged.model_dump(mode="json")
    return {"schema_version": SCHEMA_VERSION, "profiles": profiles}


def profiles_document(profiles: list[SensorProfile]) -> dict[str, Any]:
    """Profiles in the file layout (what the benchmark writes)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "profiles": {p.gpu_name: p.model_dump(mode="json") for p in profiles},
    }
