"""Quality flags: reasons to trust an energy figure less, each with a severity.

Codes: ``short_window``, ``low_sample_count``, ``throttling``, ``thermal_drift``,
``persistence_mode_off``, ``counter_missing``, ``estimate_used``, ``mig``, ``counter_reset``,
``baseline_clamped``, ``baseline_unsettled``, ``not_measured``.

Thresholds are module constants so that they are documented in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from llenergymeasure.domain.energy import QualityFlag, ThermalSummary

# A window under this many counter update periods has > ~10 % quantisation error.
MIN_COUNTER_PERIODS = 10
# The H100/A100 power sensor samples part of the time: below this, accuracy drops (SC24).
RECOMMENDED_WINDOW_S = 10.0
MIN_SAMPLES = 10
THERMAL_DRIFT_CLOCK_PCT = 5.0
THERMAL_DRIFT_TEMP_C = 10.0
# Idle power may change by at most this much (%, first vs last third of the baseline window)
# for the baseline to count as settled; NVML idle noise is ~0.03 W (~0.03 %) on an H100.
BASELINE_SETTLED_PCT = 1.0


def short_window_flags(duration_s: float, update_periods_s: Sequence[float]) -> list[QualityFlag]:
    """Flags for a window that is short relative to the counter's update period."""
    period = max(update_periods_s, default=None)
    if period is not None and duration_s < period:
        return [
            QualityFlag(
                code="short_window",
                severity="critical",
                message=(
                    f"Window {duration_s * 1000:.0f} ms is shorter than the energy counter's "
                    f"update period ({period * 1000:.0f} ms): it may read 0 J. Measure longer."
                ),
            )
        ]
    if period is not None and duration_s < MIN_COUNTER_PERIODS * period:
        return [
            QualityFlag(
                code="short_window",
                message=(
                    f"Window {duration_s:.2f} s spans fewer than {MIN_COUNTER_PERIODS} counter "
                    f"updates ({period * 1000:.0f} ms each): error up to "
                    f"~{100 * period / duration_s:.0f} %. Measure longer or repeat."
                ),
            )
        ]
    if duration_s < RECOMMENDED_WINDOW_S:
        return [
            QualityFlag(
                code="short_window",
                severity="info",
                message=(
                    f"Window {duration_s:.2f} s < {RECOMMENDED_WINDOW_S:.0f} s: GPU power sensors "
                    "sample only part of the time; prefer longer windows and repeats."
                ),
            )
        ]
    return []


def low_sample_flag(sample_count: int, duration_s: float) -> QualityFlag | None:
    """Flag a window with too few telemetry samples for a trustworthy cross-check."""
    if sample_count >= MIN_SAMPLES:
        return None
    return QualityFlag(
        code="low_sample_count",
        message=(
            f"Only {sample_count} telemetry samples in {duration_s:.2f} s: the polled "
            "cross-check and thermal summary are rough."
        ),
    )


def thermal_flags(thermal: ThermalSummary, slowdown_reasons: frozenset[str]) -> list[QualityFlag]:
    """Throttling and thermal-drift flags from a window's thermal summary."""
    flags: list[QualityFlag] = []
    slowed = {
        r: s for r, s in thermal.throttle_s_by_reason.items() if r in slowdown_reasons and s > 0
    }
    if slowed:
        detail = ", ".join(f"{r} {s:.1f} s" for r, s in sorted(slowed.items()))
        flags.append(
            QualityFlag(
                code="throttling",
                message=f"Clocks were throttled during the window ({detail}).",
            )
        )
    drift = thermal.sm_clock_drift_pct
    rise = thermal.temperature_rise_c
    if (drift is not None and abs(drift) > THERMAL_DRIFT_CLOCK_PCT) or (
        rise is not None and rise > THERMAL_DRIFT_TEMP_C
    ):
        flags.append(
            QualityFlag(
                code="thermal_drift",
                message=(
                    f"SM clock drifted {drift if drift is not None else float('nan'):+.1f} % and "
                    f"temperature rose {rise if rise is not None else float('nan'):.0f} C over "
                    "the window: consider a longer warm-up or a thermal floor."
                ),
            )
        )
    return flags


def baseline_unsettled_flag(power_trend_pct: float) -> QualityFlag:
    """The idle baseline's power drifted during its window: above-idle energy is uncertain."""
    return QualityFlag(
        code="baseline_unsettled",
        message=(
            f"Idle power changed by {power_trend_pct:+.1f} % during the baseline window (GPU "
            "still cooling or changing clocks after earlier work), so energy above idle is "
            f"uncertain by about {abs(power_trend_pct):.1f} % of the idle energy; gross energy "
            "is unaffected."
        ),
    )


def persistence_flag(device_key: str) -> QualityFlag:
    """Persistence mode off: the driver may re-initialise between runs."""
    return QualityFlag(
        code="persistence_mode_off",
        severity="info",
        message=(
            f"{device_key}: persistence mode is off; driver re-initialisation can add latency "
            "and idle power noise (`sudo nvidia-smi -pm 1`)."
        ),
    )


def counter_missing_flag(device_key: str) -> QualityFlag:
    """The GPU has no energy counter: polled power is integrated instead."""
    return QualityFlag(
        code="counter_missing",
        message=(
            f"{device_key}: no NVML energy counter (pre-Volta?); energy is polled power "
            "integrated over time (less accurate for short windows)."
        ),
    )


def counter_reset_flag(device_key: str, start_mj: int, end_mj: int) -> QualityFlag:
    """The energy counter went backwards within the window."""
    return QualityFlag(
        code="counter_reset",
        message=(
            f"{device_key}: energy counter went backwards ({start_mj} -> {end_mj} mJ; driver "
            "reload or GPU reset?). Energy for this window is polled power instead."
        ),
    )


def mig_flag(device_key: str) -> QualityFlag:
    """MIG: power and energy are the whole physical GPU's."""
    return QualityFlag(
        code="mig",
        message=(
            f"{device_key}: MIG is enabled; NVML power and energy are those of the whole "
            "physical GPU, including other MIG instances' work."
        ),
    )


def estimate_flag(scope: str, detail: str) -> QualityFlag:
    """An estimate (not a measurement) was used for a scope."""
    return QualityFlag(
        code="estimate_used",
        message=f"{scope} energy is an estimate, not a measurement: {detail}",
    )


def not_measured_flag(scope: str, reason: str) -> QualityFlag:
    """A scope was not measured at all."""
    return QualityFlag(
        code="not_measured", severity="info", message=f"{scope} energy not measured: {reason}"
    )


# ---- dropping repeats ------------------------------------------------------------------
def drop_repeated_flags(flags: Sequence[QualityFlag]) -> list[QualityFlag]:
    """The flags in order, each exact (code, message) repeat dropped (the first is kept).

    Unlike :func:`merge_flags_by_code`, flags of one code with different messages all stay.
    """
    seen: set[tuple[str, str]] = set()
    out: list[QualityFlag] = []
    for flag in flags:
        if (flag.code, flag.message) not in seen:
            seen.add((flag.code, flag.message))
            out.append(flag)
    return out


# ---- one flag per code ----------------------------------------------------------------
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: Codes whose messages are separate facts (one note, one device, one scope each): their
#: distinct messages are joined into one flag instead of one being kept.
ADDITIVE_CODES = frozenset(
    {
        "backend_note",
        "dataset_note",
        "preflight_note",
        "device_order",
        "persistence_mode_off",
        "counter_missing",
        "counter_reset",
        "mig",
        "not_measured",
        "estimate_used",
        "prompts_truncated",
    }
)


def merge_flags_by_code(flags: Sequence[QualityFlag]) -> list[QualityFlag]:
    """One flag per code, in order of first appearance.

    Flags of one code are alternative descriptions of one finding (e.g. ``short_window``
    from the energy layer and from the window length): the most severe is kept, the
    earliest on a tie, so callers list the more specific source (the energy layer) first.
    For :data:`ADDITIVE_CODES` the distinct messages are joined with ``"; "`` under the
    highest severity.
    """
    groups: dict[str, list[QualityFlag]] = {}
    for flag in flags:
        groups.setdefault(flag.code, []).append(flag)
    return [_merge_group(code, group) for code, group in groups.items()]


def _merge_group(code: str, group: list[QualityFlag]) -> QualityFlag:
    """The single flag standing for ``group`` (all of one ``code``)."""
    top = max(group, key=lambda f: _SEVERITY_RANK.get(f.severity, 1))  # first max wins
    if code not in ADDITIVE_CODES:
        return top
    messages = list(dict.fromkeys(f.message for f in group))
    return QualityFlag(code=code, message="; ".join(messages), severity=top.severity)
