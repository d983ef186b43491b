"""Hand-made results for the results-layer tests (plain data, no hardware)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from llenergymeasure.config.hashing import config_hash
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.domain.energy import EnergyMeasurement, EnergyReport, MeterSelection
from llenergymeasure.domain.results import RawProcessResult, RequestTimingRecord, WarmupResult

CONFIG = ExperimentConfig(model="tiny-llama", n=4)
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def gpu_report(energy_by_device: dict[str, float], duration_s: float) -> EnergyReport:
    """An NVML-counter report over the given GPUs."""
    m = EnergyMeasurement.from_devices(
        meter="nvml",
        window="measure",
        scope="gpu",
        method="counter",
        energy_j_by_device=energy_by_device,
        duration_s=duration_s,
    )
    return EnergyReport(
        window="measure",
        duration_s=duration_s,
        measurements=[m],
        gpu_energy_j=m.energy_j,
        not_measured={"cpu_package": "no RAPL"},
        meter_selection=MeterSelection(requested="auto", meters=["nvml"], reason="test"),
    )


def timing(start_s: float, gaps_s: list[float], n_in: int = 10) -> RequestTimingRecord:
    """One request starting at ``start_s`` whose tokens arrive after ``gaps_s``."""
    times, t = [], start_s
    for gap in gaps_s:
        t += gap
        times.append(t)
    return RequestTimingRecord(
        request_start_s=start_s, token_times_s=times, input_tokens=n_in, output_tokens=len(times)
    )


def raw(
    index: int,
    n_processes: int,
    timings: list[RequestTimingRecord],
    energy: EnergyReport | None,
    window: tuple[float, float] = (100.0, 110.0),
    **extra: Any,
) -> RawProcessResult:
    """A raw process result of the shared CONFIG."""
    return RawProcessResult(
        experiment_id="exp1",
        name="tiny",
        process_index=index,
        n_processes=n_processes,
        config=CONFIG.model_dump(mode="json"),
        provenance={"model": "cli"},
        config_hash=config_hash(CONFIG),
        device=f"cuda:{index}",
        window_start_unix_s=window[0],
        window_end_unix_s=window[1],
        duration_s=window[1] - window[0],
        timings=timings,
        energy=energy,
        warmup=WarmupResult(mode="fixed", runs=3, latencies_s=[0.1, 0.1, 0.1], duration_s=0.3),
        started_at=T0,
        ended_at=T0,
        **extra,
    )
