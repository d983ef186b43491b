"""Read every saved result under a directory: experiments, the studies they belong to, their
cycles and configuration labels.

``collect(path)`` accepts a ``result.json``, one experiment's run directory, a study
directory or a whole results directory (searched recursively). A study directory is one
holding ``study_manifest.json`` (cycle and label of each result) and, once the study ended,
``study_summary.json``. A file that cannot be read is skipped, named in
``Collection.problems`` and logged as a warning; a path that holds no readable result raises
:class:`~llenergymeasure.exceptions.ResultsError` (CLI exit code 2).

Nothing here measures or recomputes anything: the report, the DataFrame export and
``llem compare`` all read results through this one function.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llenergymeasure.config.provenance import flatten
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.domain.study import StudyResult
from llenergymeasure.exceptions import ResultsError, StudyError
from llenergymeasure.results.filenames import (
    RESULT_FILENAME,
    STUDY_MANIFEST_FILENAME,
    STUDY_SUMMARY_FILENAME,
)
from llenergymeasure.results.persistence import find_result_files, read_result
from llenergymeasure.study.manifest import ManifestEntry, read_manifest
from llenergymeasure.study.summary import ALWAYS_SHOWN_FIELDS, NOT_KEY_FIELDS

logger = logging.getLogger(__name__)

NO_RESULTS_FIX = (
    "give a directory that `llem run` wrote: one experiment's run directory, a study "
    "directory (holding study_manifest.json) or the results directory above them"
)


@dataclass(eq=False)
class StudyInfo:
    """A study directory found under the collected path."""

    name: str
    study_dir: Path
    summary: StudyResult | None = field(repr=False)
    swept_fields: tuple[str, ...] = ()


@dataclass(eq=False)
class SavedRun:
    """One experiment result read from disk, with where it sits in its study (if any)."""

    result: ExperimentResult = field(repr=False)
    path: Path
    study: StudyInfo | None
    cycle: int | None
    config_label: str
    key_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """The run directory (holds result.json and timeseries.parquet)."""
        return self.path.parent

    @property
    def completed(self) -> bool:
        """Whether the run finished its measurement (failed runs carry no metrics)."""
        return not self.result.failed and self.result.metrics is not None

    @property
    def display_label(self) -> str:
        """``label`` and ``cycle N`` when the run is one cycle of a study."""
        return self.config_label + (f" (cycle {self.cycle})" if self.cycle is not None else "")


@dataclass
class Collection:
    """Everything readable under ``root``, in path order."""

    root: Path
    runs: list[SavedRun] = field(default_factory=list)
    studies: list[StudyInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def standalone(self) -> list[SavedRun]:
        """Runs that belong to no study found here."""
        return [r for r in self.runs if r.study is None]

    def runs_of(self, study: StudyInfo) -> list[SavedRun]:
        """The runs of one study."""
        return [r for r in self.runs if r.study is study]


def collect(path: Path | str) -> Collection:
    """Every result under ``path`` with its study, cycle and label (see module docstring)."""
    root = Path(path)
    if not root.exists():
        raise ResultsError(f"{root} does not exist -> {NO_RESULTS_FIX}")
    collection = Collection(root=root)
    studies = _read_studies(root, collection.problems)
    by_path: dict[Path, tuple[StudyInfo | None, ManifestEntry | None]] = {}
    for study_dir, (info, study_entries) in studies.items():
        collection.studies.append(info)
        for e in study_entries:
            if e.result_path:
                by_path[(study_dir / e.result_path).resolve()] = (info, e)
    files = find_result_files(root)
    for file in files:
        try:
            result = read_result(file)
        except (OSError, ValueError, ValidationError) as e:
            _problem(collection.problems, f"{file}: unreadable result ({_one_line(e)}): skipped")
            continue
        study, entry = by_path.get(file.resolve(), (_enclosing_study(file, studies), None))
        collection.runs.append(_saved_run(result, file, study, entry))
    if not collection.runs:
        found = (
            f"{len(files)} {RESULT_FILENAME} file(s), none readable"
            if files
            else f"no {RESULT_FILENAME} under it"
        )
        details = "".join(f"\n  - {p}" for p in collection.problems)
        raise ResultsError(f"no results in {root}: {found} -> {NO_RESULTS_FIX}{details}")
    _add_key_fields(collection)
    return collection


def _read_studies(
    root: Path, problems: list[str]
) -> dict[Path, tuple[StudyInfo, list[ManifestEntry]]]:
    """Study directories under ``root`` (or ``root`` itself) with their manifest entries."""
    if root.is_file():
        return {}
    dirs = sorted(
        {p.parent for name in (STUDY_MANIFEST_FILENAME, STUDY_SUMMARY_FILENAME)
         for p in root.rglob(name)}
    )  # fmt: skip
    studies: dict[Path, tuple[StudyInfo, list[ManifestEntry]]] = {}
    for study_dir in dirs:
        summary = _read_summary(study_dir, problems)
        study_entries: list[ManifestEntry] = []
        name = summary.study_name if summary else None
        try:
            manifest = read_manifest(study_dir)
            study_entries, name = manifest.entries, manifest.study_name
        except StudyError as e:
            _problem(problems, f"{study_dir}: {_one_line(e)}: cycles unknown")
        info = StudyInfo(name=name or study_dir.name, study_dir=study_dir, summary=summary)
        studies[study_dir] = (info, study_entries)
    return studies


def _read_summary(study_dir: Path, problems: list[str]) -> StudyResult | None:
    """``study_summary.json`` (without its experiments), or None if absent/unreadable."""
    path = study_dir / STUDY_SUMMARY_FILENAME
    if not path.is_file():
        return None
    try:
        return StudyResult.model_validate_json(path.read_bytes())
    except (OSError, ValueError, ValidationError) as e:
        _problem(problems, f"{path}: unreadable study summary ({_one_line(e)}): skipped")
        return None


def _enclosing_study(
    file: Path, studies: dict[Path, tuple[StudyInfo, list[ManifestEntry]]]
) -> StudyInfo | None:
    """The study whose directory holds ``file`` (a result the manifest does not name)."""
    for study_dir, (info, _) in studies.items():
        if study_dir in file.parents:
            return info
    return None


def _saved_run(
    result: ExperimentResult, file: Path, study: StudyInfo | None, entry: ManifestEntry | None
) -> SavedRun:
    """A SavedRun, labelled from the manifest entry, else the summary, else the result."""
    label = entry.label if entry else None
    if label is None and study is not None and study.summary is not None:
        label = next(
            (c.label for c in study.summary.configs if c.config_hash == result.config_hash), None
        )
    return SavedRun(
        result=result,
        path=file,
        study=study,
        cycle=entry.cycle if entry else None,
        config_label=label or result.name,
    )


def _add_key_fields(collection: Collection) -> None:
    """Give each run its key fields: model/backend/precision and every config field that
    differs between the configurations of its group (a study, or the standalone runs)."""
    groups: list[tuple[StudyInfo | None, list[SavedRun]]] = [
        (s, collection.runs_of(s)) for s in collection.studies
    ]
    groups.append((None, collection.standalone()))
    for study, runs in groups:
        varying = varying_fields(r.result.config for r in runs)
        chosen = [*ALWAYS_SHOWN_FIELDS, *(k for k in varying if k not in ALWAYS_SHOWN_FIELDS)]
        if study is not None:
            swept = tuple(k for k in chosen if k in varying)
            study.swept_fields = swept
        for run in runs:
            flat = flat_config(run.result.config)
            run.key_fields = {k: flat.get(k) for k in chosen}


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A result's effective config as dotted leaves, unset (None) fields left out."""
    return {k: v for k, v in flatten(config).items() if v is not None}


def varying_fields(configs: Iterable[dict[str, Any]]) -> list[str]:
    """Dotted config fields whose value differs between the given configs (sorted)."""
    flat = [flat_config(c) for c in configs]
    keys = sorted({k for f in flat for k in f} - NOT_KEY_FIELDS)
    distinct = {json.dumps(f, sort_keys=True, default=str) for f in flat}
    if len(distinct) < 2:
        return []
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def distinct(values: Sequence[str | None]) -> list[str]:
    """Distinct non-empty values, in first-seen order."""
    return list(dict.fromkeys(v for v in values if v))


def _problem(problems: list[str], text: str) -> None:
    problems.append(text)
    logger.warning("warning: %s", text)


def _one_line(error: BaseException) -> str:
    """``Type: first line`` of an exception, at most 200 characters."""
    lines = str(error).strip().splitlines()
    return (f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)[:200]
