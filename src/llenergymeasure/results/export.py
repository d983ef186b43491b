"""Flat export of many results: one row per experiment, Parquet or CSV (for pandas users).

    export_results("results/", Path("all.parquet"))      # every result.json under results/
    df = pandas.read_parquet("all.parquet")

Columns: identity (name, id, hash, time, failed), key config fields (model, backend,
precision, batch size, …) and headline metrics (energy by scope, J/token, throughput,
latency statistics ``<metric>_ms_<stat>`` such as ``ttft_ms_mean``, the names of
``domain.study.STUDY_METRICS``; FLOPs, memory, CO2). ``None`` means "not measured", never
zero. The study-aware export (study name, cycle, config label, swept fields) is
``llenergymeasure.reporting.frame``; it writes its rows with :func:`write_rows`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llenergymeasure.domain.metrics import LatencyStats
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.exceptions import ResultFileError
from llenergymeasure.results.persistence import atomic_write_bytes, find_result_files, read_result

logger = logging.getLogger(__name__)

CONFIG_COLUMNS = (
    "model", "weights", "backend", "precision", "n", "max_input_tokens", "max_output_tokens",
    "energy_backend", "device",
)  # fmt: skip
BACKEND_COLUMNS = ("batch_size", "cache_implementation", "attn_implementation", "max_num_seqs")


def export_results(source: Path | str | Iterable[Path | str], out: Path | str) -> Path:
    """Write one row per result to ``out`` (``.parquet`` or ``.csv``); returns ``out``.

    ``source`` is a results directory (searched recursively for result.json) or result paths.
    A file that is not a valid result is skipped with a warning naming it.
    """
    rows = []
    for path in _paths(source):
        try:
            rows.append(result_row(read_result(path), path))
        except ResultFileError as e:
            logger.warning("export: skipped %s", e)
    return write_rows(rows, out)


def write_rows(rows: list[dict[str, Any]], out: Path | str) -> Path:
    """Write flat rows (plain scalars) atomically as ``.parquet`` or ``.csv``; returns ``out``."""
    out = Path(out)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        return atomic_write_bytes(out, sink.getvalue().to_pybytes())
    if out.suffix == ".csv":
        return atomic_write_bytes(out, _csv_bytes(rows))
    raise ValueError(f"export: unsupported file type {out.suffix!r} -> use .parquet or .csv")


def _paths(source: Path | str | Iterable[Path | str]) -> list[Path]:
    """Result files from a directory or an explicit list."""
    if isinstance(source, (str, Path)):
        return find_result_files(Path(source))
    return [Path(p) for p in source]


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """CSV text of rows (columns: union of keys, first-seen order)."""
    import io

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _stats(prefix: str, stats: LatencyStats | None) -> dict[str, float | None]:
    """mean/p50/p90/p99 of one latency metric as flat columns (``ttft_ms_mean``, ...)."""
    keys = ("mean", "p50", "p90", "p99")
    return {f"{prefix}_ms_{k}": (getattr(stats, f"{k}_ms") if stats else None) for k in keys}


def result_row(result: ExperimentResult, path: Path | str | None = None) -> dict[str, Any]:
    """One flat row (plain scalars) describing ``result``."""
    cfg = result.config
    section = cfg.get(cfg.get("backend", "")) or {}
    m, e = result.metrics, result.energy
    dataset = cfg.get("dataset")
    row: dict[str, Any] = {
        "name": result.name,
        "experiment_id": result.experiment_id,
        "config_hash": result.config_hash,
        "started_at": result.started_at.isoformat(),
        "failed": result.failed,
        **{k: cfg.get(k) for k in CONFIG_COLUMNS},
        "dataset": dataset if isinstance(dataset, str) else f"synthetic:{dataset}",
        **{k: section.get(k) for k in BACKEND_COLUMNS},
        "measurement_window_s": result.measurement_window_s,
        "setup_s": result.setup_s,
        "energy_j": result.energy_j,
        "gpu_energy_j": e.gpu_energy_j if e else None,
        "cpu_energy_j": e.cpu_energy_j if e else None,
        "dram_energy_j": e.dram_energy_j if e else None,
        "energy_methods": ",".join(sorted({f"{x.scope}:{x.method}" for x in e.measurements}))
        if e
        else None,
        "energy_above_idle_j": e.baseline.energy_above_idle_j if e and e.baseline else None,
        "idle_power_w": e.baseline.idle_power_w if e and e.baseline else None,
        "mean_power_w": result.mean_power_w,
        "j_per_output_token": result.j_per_output_token,
        "energy_basis": m.energy_ratios.energy_basis if m and m.energy_ratios else None,
        "j_per_request": m.energy_ratios.j_per_request if m and m.energy_ratios else None,
    }
    row.update(_metric_columns(result))
    row.update(
        {
            "co2_g": result.co2.co2_g if result.co2 else None,
            "max_temperature_c": e.thermal.max_temperature_c if e and e.thermal else None,
            "gpu_name": result.environment.gpus[0].name
            if result.environment and result.environment.gpus
            else None,
            "warning_codes": ",".join(sorted({w.code for w in result.warnings})),
            "result_path": str(path) if path is not None else None,
        }
    )
    return row


def _metric_columns(result: ExperimentResult) -> dict[str, Any]:
    """Tokens, rates, latency, FLOPs and memory columns (None when absent)."""
    m = result.metrics
    lat = m.latency if m else None
    return {
        "n_requests": m.tokens.n_requests if m else None,
        "input_tokens": m.tokens.input_tokens if m else None,
        "output_tokens": m.tokens.output_tokens if m else None,
        "output_tokens_per_s": m.throughput.output_tokens_per_s if m else None,
        "total_tokens_per_s": m.throughput.total_tokens_per_s if m else None,
        "requests_per_s": m.throughput.requests_per_s if m else None,
        **_stats("ttft", lat.ttft if lat else None),
        **_stats("itl", lat.itl if lat else None),
        **_stats("tpot", lat.tpot if lat else None),
        **_stats("e2e", lat.e2e if lat else None),
        **_stats("queue", lat.queue if lat else None),
        "prefill_flops": m.flops.prefill_flops if m and m.flops else None,
        "decode_flops": m.flops.decode_flops if m and m.flops else None,
        "achieved_tflops_per_s": m.flops.achieved_tflops_per_s if m and m.flops else None,
        "peak_memory_mb": m.memory.peak_memory_mb if m and m.memory else None,
        "kv_cache_estimate_mb": m.memory.kv_cache_estimate_mb if m and m.memory else None,
        "kv_cache_reserved_mb": m.memory.kv_cache_reserved_mb if m and m.memory else None,
    }
