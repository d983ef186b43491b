"""Saved results as a table: one row per experiment, for pandas, CSV and Parquet.

    from llenergymeasure import load_results
    df = load_results("results/my-study_20261123-213000")      # pandas.DataFrame
    df.groupby("config_label")["j_per_output_token"].mean()

Columns (flat, units in their names): ``study_name``, ``study_dir``, ``cycle``,
``config_label``, ``config_hash``, then every column of
:func:`llenergymeasure.results.export.result_row` (``energy_j``, ``gpu_energy_j``,
``j_per_output_token``, ``output_tokens_per_s``, ``ttft_ms_mean``, ``itl_ms_p99``, ``energy_basis``,
...), ``energy_estimate`` (True when any energy figure is modelled, not measured), every
swept config field under its dotted name (``pytorch.batch_size``), ``swept_fields`` (their
names) and, where a result has a phase attribution, ``<phase>_energy_j``. ``None`` (NaN in
pandas) means "not measured", never zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.exceptions import ExtraNotInstalledError
from llenergymeasure.reporting.collect import Collection, SavedRun, collect
from llenergymeasure.reporting.methods import is_estimate
from llenergymeasure.reporting.phases import phase_energy
from llenergymeasure.results.export import result_row, write_rows

if TYPE_CHECKING:
    import pandas

REPORT_EXTRA = 'pip install "llenergymeasure[report]"'


def run_row(run: SavedRun) -> dict[str, Any]:
    """The flat row of one saved run (plain scalars)."""
    study = run.study
    row: dict[str, Any] = {
        "study_name": study.name if study else None,
        "study_dir": str(study.study_dir) if study else None,
        "cycle": run.cycle,
        "config_label": run.config_label,
        "config_hash": run.result.config_hash,
    }
    row.update(result_row(run.result, run.path))
    row["energy_estimate"] = is_estimate(run.result) if run.result.energy else None
    swept = study.swept_fields if study else ()
    for key in swept:
        value = run.key_fields.get(key)
        row[key] = value if _is_scalar(value) else json.dumps(value, default=str)
    row["swept_fields"] = ",".join(swept) if study else None
    for phase in phase_energy(run.result) or []:
        row[f"{phase.phase}_energy_j"] = phase.energy_j
        if phase.j_per_token is not None:
            row[f"{phase.phase}_j_per_token"] = phase.j_per_token
    per = run.result.energy.per_request if run.result.energy is not None else None
    if per is not None and per.not_measured is None:
        row.update(energy_per_request_mean_j=per.mean_j, energy_per_request_p50_j=per.p50_j,
                   energy_per_request_p99_j=per.p99_j)  # fmt: skip
    return row


def rows(collection: Collection) -> list[dict[str, Any]]:
    """One row per saved run; every row has every column (missing values are None)."""
    table = [run_row(r) for r in collection.runs]
    columns: dict[str, None] = {}
    for row in table:
        columns.update(dict.fromkeys(row))
    return [{c: row.get(c) for c in columns} for row in table]


def load_results(path: Path | str) -> pandas.DataFrame:
    """Every result under ``path`` as a pandas DataFrame, one row per experiment.

    ``path`` is a run directory, a study directory or a results directory. Unreadable files
    are skipped with a logged warning; a path without results raises ``ResultsError``.
    Needs pandas (the ``report`` extra).
    """
    pandas = _pandas()
    return pandas.DataFrame(rows(collect(path)))


def export(path: Path | str, out: Path | str) -> Path:
    """Write the rows of :func:`load_results` to ``out`` (``.csv`` or ``.parquet``)."""
    return write_rows(rows(collect(path)), out)


def _pandas() -> Any:
    """pandas, or ExtraNotInstalledError naming the extra that brings it."""
    try:
        import pandas
    except ImportError as e:
        raise ExtraNotInstalledError(
            f"load_results needs pandas, which is not installed -> {REPORT_EXTRA}"
        ) from e
    return pandas


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
