"""Names of the files and directories a run writes (one place, so readers agree with writers).

Layout (README, Results)::

    <results_dir>/<name>_<YYYYmmdd-HHMMSS>[-2, -3, …]/
        result.json              ExperimentResult (schema-versioned)
        timeseries.parquet       power / thermal timeline of the run
        process_<i>.json         raw per-process results of a multi-process run
        study_manifest.json      (studies) progress checkpoint
        study_summary.json       (studies) summary across cycles
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

RESULT_FILENAME = "result.json"
TIMESERIES_FILENAME = "timeseries.parquet"
STUDY_MANIFEST_FILENAME = "study_manifest.json"
STUDY_SUMMARY_FILENAME = "study_summary.json"
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(name: str, fallback: str = "experiment") -> str:
    """``name`` made safe as one path component: other characters become ``_``, no ``..``."""
    cleaned = _UNSAFE.sub("_", name).strip("._-").replace("..", "_")
    return cleaned[:100] or fallback


def format_timestamp(when: datetime | None = None) -> str:
    """``YYYYmmdd-HHMMSS`` in UTC (now by default)."""
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime(TIMESTAMP_FORMAT)


def run_dir_name(name: str, when: datetime | None = None) -> str:
    """``<name>_<YYYYmmdd-HHMMSS>`` for a run directory."""
    return f"{safe_component(name)}_{format_timestamp(when)}"


def process_result_filename(process_index: int) -> str:
    """File holding the raw result of one process of a multi-process run."""
    if process_index < 0:
        raise ValueError("process_index must be >= 0")
    return f"process_{process_index}.json"


def default_experiment_name(model: str, backend: str) -> str:
    """A readable experiment name when the config gives none, e.g. ``tiny-llama_pytorch``."""
    tail = model.rstrip("/").split("/")[-1]
    return safe_component(f"{tail}_{backend}")
