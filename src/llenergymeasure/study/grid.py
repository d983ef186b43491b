"""Expand a study into the ordered list of experiments to run (docs/configuration.md, Study).

Candidates are the Cartesian product of ``sweep:`` (in sweep key order) applied over
``base:``, plus each ``experiments:`` entry merged over ``base:``. A sweep key whose first
segment is a backend name (``vllm.max_num_seqs``) applies only to points of that backend.
Each candidate is validated into an :class:`ExperimentConfig`; invalid ones are skipped with
the reason, duplicates (same config hash) are collapsed with a note. The unique configs are
then repeated ``n_cycles`` times in the chosen order:

* ``interleaved``: cycle 1: A B C, cycle 2: A B C, ...
* ``grouped``: A A B B C C (all cycles of a config together)
* ``shuffled``: each cycle's order shuffled with ``random.Random(shuffle_seed)``; a seed is
  drawn and recorded in the plan when none is given.

Usage::

    plan = expand_study(study, user_config=load_user_config())
    for item in plan.experiments: item.config, item.cycle, item.position, item.label
"""

from __future__ import annotations

import copy
import itertools
import random
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from llenergymeasure.config._issues import issues_from_validation_error
from llenergymeasure.config._yaml import deep_merge
from llenergymeasure.config.hashing import config_hash, short_hash, study_design_hash
from llenergymeasure.config.models import ExperimentConfig, StudyConfig
from llenergymeasure.config.provenance import flatten, provenance_for, unflatten_overrides
from llenergymeasure.config.study_design import (
    apply_experiment_overrides,
    backend_scope,
    set_path,
    split_overrides,
)
from llenergymeasure.config.user_config import UserConfig
from llenergymeasure.exceptions import ConfigIssue, ConfigValidationError
from llenergymeasure.redaction import REDACTED, is_credential_key

if TYPE_CHECKING:
    from llenergymeasure.config.loader import LoadedConfig


@dataclass(frozen=True)
class UniqueConfig:
    """One distinct configuration of the study (before repetition over cycles)."""

    config: ExperimentConfig
    config_hash: str
    label: str
    provenance: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class PlannedExperiment:
    """One run: a configuration in a cycle at a position of the run order."""

    config: ExperimentConfig
    config_hash: str
    cycle: int  # 1-based
    position: int  # 0-based index in the whole run order
    label: str
    provenance: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class SkippedPoint:
    """A grid point that did not validate, with the rendered reason."""

    point: dict[str, Any]
    reason: str
    label: str = ""


@dataclass
class StudyPlan:
    """The expanded study: what runs, in which order, and what was left out."""

    study_name: str
    experiments: list[PlannedExperiment]
    unique_configs: list[UniqueConfig]
    skipped: list[SkippedPoint]
    order: str
    shuffle_seed: int | None
    n_cycles: int
    design_hash: str
    notes: list[str] = field(default_factory=list)
    study: StudyConfig | None = None  # the study as expanded (overrides applied, seed set)


@dataclass
class _Candidate:
    """A point before validation: its raw dict and what was assigned to it."""

    raw: dict[str, Any]
    assignments: dict[str, Any]
    label: str


def plan_loaded(loaded: LoadedConfig) -> StudyPlan:
    """Expand a loaded configuration's study with the same user config and overrides."""
    return expand_study(
        loaded.study, user_config=loaded.user_config, cli_overrides=loaded.cli_overrides
    )


def expand_study(
    study: StudyConfig,
    *,
    user_config: UserConfig | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
) -> StudyPlan:
    """Expand ``study`` into a :class:`StudyPlan` (see the module docstring).

    ``user_config`` supplies defaults under everything (energy backend, carbon intensity,
    PUE); ``cli_overrides`` (dotted or nested keys) win over everything. Raises
    ConfigValidationError when no valid experiment remains.
    """
    study, notes, cli = _with_overrides(study, cli_overrides)
    chosen, defaults = user_config.experiment_defaults() if user_config else ({}, {})
    candidates, cand_notes = _candidates(study)
    validated, skipped, dup_notes = _validate_all(study, candidates, {**defaults, **chosen})
    if not validated:
        raise ConfigValidationError(
            [ConfigIssue("", f"{s.label or 'point'}: {s.reason}") for s in skipped]
            or [
                ConfigIssue("", "the study expands to no experiment", "add sweep: or experiments:")
            ],
            source=f"study {study.study_name} (every point is invalid)",
        )
    layers = [("default", defaults), ("user_config", chosen)]
    unique = [_with_provenance(u, layers, cli) for u in _unique_names(validated)]
    seed = study.execution.shuffle_seed
    if study.execution.order == "shuffled" and seed is None:
        seed = secrets.randbelow(2**31)
        study = study.model_copy(
            update={"execution": study.execution.model_copy(update={"shuffle_seed": seed})}
        )
    return StudyPlan(
        study_name=study.study_name,
        experiments=order_runs(unique, study.execution.n_cycles, study.execution.order, seed),
        unique_configs=unique,
        skipped=skipped,
        order=study.execution.order,
        shuffle_seed=seed,
        n_cycles=study.execution.n_cycles,
        design_hash=study_design_hash(study),
        notes=notes + cand_notes + dup_notes,
        study=study,
    )


def _with_overrides(
    study: StudyConfig, cli_overrides: Mapping[str, Any] | None
) -> tuple[StudyConfig, list[str], dict[str, Any]]:
    """The study with command-line overrides baked in, notes, and the nested overrides."""
    cli = unflatten_overrides(cli_overrides)
    if not cli:
        return study, [], {}
    study_part, experiment_part = split_overrides(cli)
    data = deep_merge(study.model_dump(), study_part)
    notes = apply_experiment_overrides(data, experiment_part)
    return StudyConfig.model_validate(data), notes, experiment_part


def _candidates(study: StudyConfig) -> tuple[list[_Candidate], list[str]]:
    """Sweep points (product in key order) then explicit experiments, all over base."""
    found: list[_Candidate] = []
    notes: list[str] = []
    if study.sweep:
        found, notes = _sweep_points(study)
    for index, entry in enumerate(study.experiments):
        label = str(entry.get("name") or _label(flatten(entry)) or f"experiment{index + 1}")
        found.append(_Candidate(deep_merge(study.base, entry), dict(flatten(entry)), label))
    if not study.sweep and not study.experiments:
        found.append(_Candidate(copy.deepcopy(study.base), {}, ""))
    return found, notes


def _sweep_points(study: StudyConfig) -> tuple[list[_Candidate], list[str]]:
    """The Cartesian product of the sweep over base; backend-scoped keys only where they fit."""
    keys = list(study.sweep)
    varying = [k for k in keys if len(study.sweep[k]) > 1]
    seen: set[str] = set()
    used_scoped: set[str] = set()
    points: list[_Candidate] = []
    for combo in itertools.product(*(study.sweep[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        backend = values.get("backend", study.base.get("backend", "pytorch"))
        applied = {k: v for k, v in values.items() if backend_scope(k) in (None, backend)}
        signature = repr(sorted(applied.items(), key=lambda kv: kv[0]))
        if signature in seen:  # differs only in keys scoped to another backend
            continue
        seen.add(signature)
        used_scoped.update(k for k in applied if backend_scope(k))
        raw = copy.deepcopy(study.base)
        for key, value in applied.items():
            set_path(raw, key, value)
        shown = {k: v for k, v in applied.items() if k in varying}
        points.append(_Candidate(raw, applied, _label(shown)))
    notes = [
        f"sweep key {k!r} applies to no experiment (no point has backend {backend_scope(k)!r})"
        for k in keys
        if backend_scope(k) and k not in used_scoped
    ]
    return points, notes


def _label(assignments: Mapping[str, Any]) -> str:
    """``precision=bf16 batch_size=8``: last path segment unless two keys share it."""
    lasts = [k.rsplit(".", 1)[-1] for k in assignments]
    parts = []
    for key, value in assignments.items():
        name = key.rsplit(".", 1)[-1]
        shown = REDACTED if is_credential_key(name) else _show(value)  # labels name dirs
        parts.append(f"{name if lasts.count(name) == 1 else key}={shown}")
    return " ".join(parts)


def _show(value: Any) -> str:
    """Compact text of a swept value."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{_show(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(_show(v) for v in value)
    return str(value)


def _validate_all(
    study: StudyConfig, candidates: list[_Candidate], user_defaults: Mapping[str, Any]
) -> tuple[list[tuple[UniqueConfig, _Candidate]], list[SkippedPoint], list[str]]:
    """Validate each candidate; skip invalid ones, collapse duplicates."""
    unique: list[tuple[UniqueConfig, _Candidate]] = []
    by_hash: dict[str, str] = {}
    skipped: list[SkippedPoint] = []
    notes: list[str] = []
    for cand in candidates:
        raw = deep_merge(user_defaults, cand.raw)
        raw.setdefault("name", _default_name(study.study_name, cand.label))
        try:
            cfg = ExperimentConfig.model_validate(raw)
        except ValidationError as e:
            skipped.append(SkippedPoint(cand.assignments, _reason(e, raw), cand.label))
            continue
        digest = config_hash(cfg)
        if digest in by_hash:
            notes.append(
                f"{cand.label or 'a point'} is identical to {by_hash[digest] or 'another point'} "
                f"(config {short_hash(digest)}): run once"
            )
            continue
        by_hash[digest] = cand.label
        unique.append((UniqueConfig(cfg, digest, cand.label), cand))
    return unique, skipped, notes


def _reason(err: ValidationError, raw: Mapping[str, Any]) -> str:
    """All problems of one point, rendered on one line."""
    issues = issues_from_validation_error(err, model_cls=ExperimentConfig, data=raw)
    return "; ".join(i.render() for i in issues)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _default_name(study_name: str, label: str) -> str:
    """``<study_name>_<slug of label>``, a safe directory name of at most 100 characters."""
    if not label:
        return study_name
    slug = _UNSAFE.sub("_", label.replace("=", "-")).strip("._-")
    slug = re.sub(r"\.{2,}", ".", slug)
    return f"{study_name}_{slug}"[:100].rstrip("._-") if slug else study_name


def _unique_names(
    unique: list[tuple[UniqueConfig, _Candidate]],
) -> list[tuple[UniqueConfig, _Candidate]]:
    """Give configs that share a name a short-hash suffix so result directories differ."""
    names = [u.config.name for u, _ in unique]
    result = []
    for u, cand in unique:
        name = u.config.name or "experiment"
        if names.count(u.config.name) > 1:
            name = f"{name[:91]}_{short_hash(u.config_hash)}"
            u = UniqueConfig(u.config.model_copy(update={"name": name}), u.config_hash, u.label)
        result.append((u, cand))
    return result


def _with_provenance(
    item: tuple[UniqueConfig, _Candidate],
    user_layers: Sequence[tuple[str, Mapping[str, Any]]],
    cli: Mapping[str, Any],
) -> UniqueConfig:
    """Attach each value's source: defaults, user config, the study ("file"), overrides."""
    u, cand = item
    layers = [*user_layers, ("file", cand.raw), ("cli", cli)]
    effective = u.config.model_dump(mode="json")
    return UniqueConfig(u.config, u.config_hash, u.label, provenance_for(effective, layers))


def order_runs(
    unique: list[UniqueConfig], n_cycles: int, order: str, seed: int | None
) -> list[PlannedExperiment]:
    """Repeat ``unique`` over ``n_cycles`` in ``order`` (interleaved | grouped | shuffled)."""
    if order == "grouped":
        pairs = [(u, c) for u in unique for c in range(1, n_cycles + 1)]
    elif order == "shuffled":
        rng = random.Random(seed)
        pairs = []
        for c in range(1, n_cycles + 1):
            cycle = list(unique)
            rng.shuffle(cycle)
            pairs += [(u, c) for u in cycle]
    else:
        pairs = [(u, c) for c in range(1, n_cycles + 1) for u in unique]
    return [
        PlannedExperiment(u.config, u.config_hash, c, i, u.label, u.provenance)
        for i, (u, c) in enumerate(pairs)
    ]
