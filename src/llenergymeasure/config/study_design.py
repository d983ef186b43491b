"""Structural checks of a study and command-line overrides applied to it.

A study's ``base:``, ``experiments:`` entries and ``sweep:`` values are free-form dicts in
:class:`StudyConfig`; these checks catch typos and wrong types in them at load time (with
file and line) so they do not silently turn every grid point invalid. Cross-field rules
(precision vs backend, a section for another backend) are *not* checked here: such points
are skipped at expansion with their reason (docs/configuration.md, Study).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from llenergymeasure.config import ssot
from llenergymeasure.config._issues import issues_from_validation_error
from llenergymeasure.config._yaml import deep_merge
from llenergymeasure.config.backend_configs import BACKEND_SECTIONS
from llenergymeasure.config.introspection import field_paths, open_dict_prefixes
from llenergymeasure.config.models import ExperimentConfig, StudyConfig
from llenergymeasure.config.provenance import flatten
from llenergymeasure.exceptions import ConfigIssue

#: Override keys that change the study itself rather than its experiments.
STUDY_LEVEL_KEYS = frozenset({"study_name", "execution", "slurm"})
_PLACEHOLDER_MODEL = "__placeholder__"


def set_path(target: dict[str, Any], path: str, value: Any) -> None:
    """Set dotted ``path`` in ``target``; a mapping value deep-merges into a mapping there."""
    *parents, leaf = path.split(".")
    for part in parents:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    if isinstance(value, Mapping) and isinstance(target.get(leaf), Mapping):
        target[leaf] = deep_merge(target[leaf], value)
    else:
        target[leaf] = copy.deepcopy(value)


def backend_scope(key: str) -> str | None:
    """The backend a sweep key is scoped to (``vllm.max_num_seqs`` -> ``vllm``), else None."""
    first = key.split(".", 1)[0]
    return first if first in ssot.BACKENDS else None


def named_backends(data: Mapping[str, Any], cli: Mapping[str, Any]) -> set[str]:
    """Backends a raw experiment or study document (plus nested overrides) will use."""
    if cli.get("backend"):
        return {str(cli["backend"])}
    if not any(key in data for key in ("sweep", "experiments", "base", "study_name")):
        return {str(data.get("backend", "pytorch"))}
    base, sweep, entries = data.get("base"), data.get("sweep"), data.get("experiments")
    default = str(base.get("backend", "pytorch")) if isinstance(base, Mapping) else "pytorch"
    found = {default}
    if isinstance(sweep, Mapping) and isinstance(sweep.get("backend"), list):
        found |= {str(b) for b in sweep["backend"]}
    if isinstance(entries, list):
        found |= {str(e.get("backend", default)) for e in entries if isinstance(e, Mapping)}
    return found


def batch_size_overrides(
    data: Mapping[str, Any], cli: Mapping[str, Any], batch_size: int
) -> dict[str, Any]:
    """``--batch-size`` as nested overrides of each used backend's batching field."""
    fields = ssot.BATCH_SIZE_FIELDS
    return {b: {fields[b]: batch_size} for b in sorted(named_backends(data, cli)) if b in fields}


def check_study_structure(study: StudyConfig | Mapping[str, Any]) -> list[ConfigIssue]:
    """Unknown keys and wrong types in base, experiments and sweep (paths from the study root).

    Accepts a raw study dict too (parts of the wrong type are skipped: validating the
    StudyConfig reports those), so these issues can be reported with the study's own.
    """
    data = study.model_dump() if isinstance(study, StudyConfig) else study
    base, experiments, sweep = data.get("base"), data.get("experiments"), data.get("sweep")
    issues = _structural(base, "base") if isinstance(base, Mapping) else []
    for index, entry in enumerate(experiments if isinstance(experiments, list) else []):
        if isinstance(entry, Mapping):
            issues += _structural(entry, f"experiments.{index}")
    for key, values in (sweep if isinstance(sweep, Mapping) else {}).items():
        if isinstance(values, list):
            issues += _check_sweep_key(str(key), values)
    return issues


def _structural(data: Mapping[str, Any], prefix: str) -> list[ConfigIssue]:
    """Field-level problems of a partial experiment dict."""
    probe = {"model": _PLACEHOLDER_MODEL, **data}
    try:
        ExperimentConfig.model_validate(probe)
    except ValidationError as e:
        return issues_from_validation_error(
            e, model_cls=ExperimentConfig, data=probe, prefix=prefix, structural_only=True
        )
    return []


def _check_sweep_key(key: str, values: list[Any]) -> list[ConfigIssue]:
    """A sweep key must name a field; each of its values must fit the field's type."""
    if not _known_sweep_path(key):
        return [_unknown_sweep_key(key)]
    issues = []
    scope = backend_scope(key)
    for index, value in enumerate(values):
        probe: dict[str, Any] = {"model": _PLACEHOLDER_MODEL}
        if scope:
            probe["backend"] = scope
        set_path(probe, key, value)
        for issue in _structural(probe, ""):
            if issue.path in ("backend", "model") and key not in ("backend", "model"):
                continue
            detail = f"{issue.path}: " if issue.path != key else ""
            issues.append(
                ConfigIssue(f"sweep.{key}.{index}", f"{detail}{issue.message}", issue.fix)
            )
    return issues


def _known_sweep_path(key: str) -> bool:
    """True when ``key`` names a field (or a sub-key of a free-form dict field)."""
    if key in field_paths(ExperimentConfig):
        return True
    return any(key.startswith(p + ".") for p in open_dict_prefixes(ExperimentConfig))


def _unknown_sweep_key(key: str) -> ConfigIssue:
    """An unknown sweep key, with the closest valid path."""
    candidates = {p: p for p in field_paths(ExperimentConfig)}
    for backend, section in BACKEND_SECTIONS.items():
        for field in section.model_fields:
            candidates.setdefault(field, f"{backend}.{field}")
    if key in candidates:
        return ConfigIssue(f"sweep.{key}", f"unknown sweep key {key!r}", f"use {candidates[key]!r}")
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    fix = (
        f"did you mean {candidates[close[0]]!r}?"
        if close
        else "use a dotted field path such as 'precision' or 'pytorch.batch_size'"
    )
    return ConfigIssue(f"sweep.{key}", f"unknown sweep key {key!r}", fix)


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(study-level, experiment-level) parts of nested overrides."""
    study = {k: v for k, v in overrides.items() if k in STUDY_LEVEL_KEYS}
    experiment = {k: v for k, v in overrides.items() if k not in STUDY_LEVEL_KEYS}
    return study, experiment


def apply_experiment_overrides(study: dict[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """Bake experiment-level overrides into a study dict so they win everywhere; return notes.

    Plain fields go into ``base`` and every ``experiments`` entry and replace sweep keys they
    fix; a backend section (``pytorch: {...}``) becomes single-valued backend-scoped sweep
    keys so it reaches only experiments of that backend.
    """
    notes: list[str] = []
    plain = {k: v for k, v in overrides.items() if k not in ssot.BACKENDS}
    sections = {k: v for k, v in overrides.items() if k in ssot.BACKENDS}
    sweep: dict[str, list[Any]] = dict(study.get("sweep") or {})
    fixed = set(flatten(plain)) | {f"{b}.{k}" for b, s in sections.items() for k in flatten(s)}
    for key in list(sweep):
        if any(key == f or key.startswith(f + ".") or f.startswith(key + ".") for f in fixed):
            del sweep[key]
            notes.append(f"sweep key {key!r} replaced by a command-line override")
    if sweep or study.get("sweep") or not study.get("experiments"):  # the sweep's points
        for backend, section in sections.items():
            for path, value in flatten(section).items():
                sweep[f"{backend}.{path}"] = [value]
    study["sweep"] = sweep
    study["base"] = deep_merge(study.get("base") or {}, plain)
    study["experiments"] = [
        _override_entry(entry, study["base"], plain, sections)
        for entry in study.get("experiments") or []
    ]
    return notes


def _override_entry(
    entry: Mapping[str, Any],
    base: Mapping[str, Any],
    plain: Mapping[str, Any],
    sections: Mapping[str, Any],
) -> dict[str, Any]:
    """One explicit experiment with overrides applied (sections only for its backend)."""
    merged = deep_merge(entry, plain)
    backend = merged.get("backend", base.get("backend", "pytorch"))
    if backend in sections:
        merged = deep_merge(merged, {backend: sections[backend]})
    return merged
