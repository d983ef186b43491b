"""Names of the files and directories a run writes (one place, so readers agree with writers).

Layout (README, Results)::

    <results_dir>/<name>_<YYYYmmdd-HHMMSS>[-2, -3, …]/
        result.json              ExperimentResult (schema-versioned); with raw/: the aggregate
        timeseries.parquet       power / thermal timeline of the run
        raw/                     runs through the launcher (pytorch.num_processes set)
            process_<i>.json     raw result of worker process i (RawProcessResult)
            process_<i>.done     completion marker, written after the JSON (its sha256)
            launch.json          the launching process's record (LaunchRecord)
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
RAW_DIRNAME = "raw"
LAUNCH_FILENAME = "launch.json"
#: torch.distributed file store of the workers' start barrier (deleted after the run)
RENDEZVOUS_FILENAME = ".rendezvous"
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
    """File (in ``raw/``) holding the raw result of one process of a launched run."""
    if process_index < 0:
        raise ValueError("process_index must be >= 0")
    return f"process_{process_index}.json"


def process_marker_filename(process_index: int) -> str:
    """Completion marker (in ``raw/``) of one process's raw result."""
    return process_result_filename(process_index).removesuffix(".json") + ".done"


def process_index_of(filename: str) -> int | None:
    """``3`` for ``process_3.json`` / ``process_3.done``; None for any other name."""
    match = re.fullmatch(r"process_(\d+)\.(json|done)", filename)
    return int(match[1]) if match else None


def default_experiment_name(model: str, backend: str) -> str:
    """A readable experiment name when the config gives none, e.g. ``tiny-llama_pytorch``."""
    tail = model.rstrip("/").split("/")[-1]
    return safe_component(f"{tail}_{backend}")
