"""Saved results for the reporting tests: hand-made studies on disk (no hardware, no model).

``write_study`` lays a study directory out as the StudyRunner does (a run directory per
experiment, ``study_manifest.json`` naming each result with its cycle and label,
``study_summary.json``), with energy per cycle drawn from a seeded distribution.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from results_factory import T0, gpu_report, raw, timing

from llenergymeasure.config.hashing import config_hash
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.domain.energy import (
    EnergyMeasurement,
    EnergyReport,
    MeterSelection,
    QualityFlag,
)
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.domain.study import StudyResult
from llenergymeasure.results.aggregation import aggregate_process_results
from llenergymeasure.results.persistence import atomic_write_text, new_run_dir, write_result
from llenergymeasure.study.manifest import (
    DesignConfig,
    DesignSummary,
    ManifestEntry,
    StudyManifest,
    write_manifest,
)
from llenergymeasure.study.summary import _config_summary, _mark_best, key_fields, study_timing


def cpu_estimate_report(energy_j: float, duration_s: float) -> EnergyReport:
    """A CPU TDP x utilisation estimate (no hardware counter)."""
    m = EnergyMeasurement.from_devices(
        meter="estimate",
        window="measure",
        scope="cpu_package",
        method="estimate",
        energy_j_by_device={"cpu:all": energy_j},
        duration_s=duration_s,
    )
    return EnergyReport(
        window="measure",
        duration_s=duration_s,
        measurements=[m],
        cpu_energy_j=energy_j,
        not_measured={"gpu": "NVML unavailable"},
        meter_selection=MeterSelection(requested="auto", meters=["estimate"], reason="test"),
    )


def make_result(
    config: ExperimentConfig,
    energy_j: float,
    *,
    itl_s: float = 0.01,
    estimate: bool = False,
    driver: str | None = None,
    warnings: Sequence[QualityFlag] = (),
) -> ExperimentResult:
    """An aggregated result of ``config``: 2 requests x 4 tokens over a 10 s window."""
    timings = [timing(100.0, [0.05, itl_s, itl_s, itl_s]), timing(101.0, [0.06, itl_s, itl_s])]
    energy = (
        cpu_estimate_report(energy_j, 10.0) if estimate else gpu_report({"gpu:0": energy_j}, 10.0)
    )
    r = raw(0, 1, timings, energy)
    r = r.model_copy(
        update={
            "config": config.model_dump(mode="json"),
            "config_hash": config_hash(config),
            "name": config.name or "exp",
            "warnings": list(warnings),
        }
    )
    result = aggregate_process_results([r])
    if driver is not None:
        from llenergymeasure.domain.environment import EnvironmentSnapshot, GpuInfo

        env = EnvironmentSnapshot(
            collected_at_unix_s=0.0,
            gpus=[GpuInfo(nvml_index=0, name="NVIDIA H100", uuid="GPU-1")],
            gpu_count=1,
            nvml_available=True,
            driver_version=driver,
            os="Linux",
            python_version="3.11",
            library_versions={"torch": "2.11.0"},
        )
        result = result.model_copy(update={"environment": env})
    return result


def write_study(
    results_dir: Path,
    name: str,
    batch_sizes: Sequence[int] = (1, 4),
    n_cycles: int = 3,
    *,
    seed: int = 0,
    energy_j: dict[int, float] | None = None,
    noise: float = 0.02,
    **result_options: Any,
) -> Path:
    """A completed study directory: one config per batch size, ``n_cycles`` cycles each."""
    rnd = random.Random(seed)
    energy_j = energy_j or {b: 100.0 / b for b in batch_sizes}
    configs = {
        b: ExperimentConfig(model="tiny-llama", n=4, name=f"{name}_b{b}", pytorch={"batch_size": b})
        for b in batch_sizes
    }
    study_dir = new_run_dir(results_dir, name, T0)
    entries, results = [], {}
    position = 0
    for cycle in range(1, n_cycles + 1):
        for b, cfg in configs.items():
            value = energy_j[b] * (1 + rnd.gauss(0, noise))
            itl_s = 0.01 * (1 + rnd.gauss(0, noise))
            result = make_result(cfg, value, itl_s=itl_s, **result_options)
            run_dir = new_run_dir(study_dir, cfg.name or "exp", T0)
            path = write_result(result, run_dir)
            entry = ManifestEntry(
                position=position,
                cycle=cycle,
                config_hash=result.config_hash,
                label=f"batch_size={b}",
                status="completed",
                result_path=str(path.relative_to(study_dir)),
                duration_s=12.0,
                measurement_s=10.0,
            )
            entries.append(entry)
            results[entry.key] = result
            position += 1
    design = DesignSummary(
        configs=[
            DesignConfig(config_hash=config_hash(c), label=f"batch_size={b}")
            for b, c in configs.items()
        ],
        n_cycles=n_cycles,
        order="interleaved",
        shuffle_seed=None,
    )
    manifest = StudyManifest(
        study_name=name, design_hash="d" * 64, design=design, entries=entries, status="completed"
    )
    write_manifest(study_dir, manifest)
    _write_summary(study_dir, manifest, configs, results, n_cycles)
    return study_dir


def _write_summary(
    study_dir: Path,
    manifest: StudyManifest,
    configs: dict[int, ExperimentConfig],
    results: dict[tuple[str, int], ExperimentResult],
    n_cycles: int,
) -> None:
    """``study_summary.json`` built by the study layer's own summary code."""
    from types import SimpleNamespace

    from llenergymeasure.domain.study import StudyCounts

    uniques = [
        SimpleNamespace(config_hash=config_hash(c), label=f"batch_size={b}", config=c)
        for b, c in configs.items()
    ]
    fields = key_fields(uniques)  # type: ignore[arg-type]
    summaries = [
        _config_summary(u, f, manifest.entries, results, n_cycles)  # type: ignore[arg-type]
        for u, f in zip(uniques, fields, strict=True)
    ]
    _mark_best(summaries)
    n = len(manifest.entries)
    summary = StudyResult(
        study_name=manifest.study_name,
        study_dir=str(study_dir),
        status="completed",
        design_hash=manifest.design_hash,
        order="interleaved",
        shuffle_seed=None,
        n_cycles=n_cycles,
        counts=StudyCounts(planned=n, completed=n, failed=0, skipped=0, not_run=0),
        configs=summaries,
        best_config_hash=next((c.config_hash for c in summaries if c.best), None),
        timing=study_timing(manifest.entries, 0.0, 100.0),
    )
    atomic_write_text(study_dir / "study_summary.json", summary.model_dump_json(indent=2))
