"""Load experiment and study configurations from YAML, user config and overrides (docs/configuration.md).

Layers, lowest priority first: model defaults, user config (energy backend, carbon
intensity, PUE, gap defaults), the YAML file (with its ``_extends`` chain), then overrides
(CLI options or keywords; dotted keys such as ``"pytorch.batch_size"``). A YAML with
``sweep:``, ``experiments:``, ``base:`` or ``study_name:`` is a study. Every problem of a file
is reported at once as :class:`ConfigValidationError` with file, line, field path and fix.

Usage::

    loaded = load_config("experiment.yaml", {"n": 20})
    loaded.kind, loaded.experiment, loaded.study, loaded.provenance["n"]   # -> "cli"
    cfg = experiment_from_kwargs(model="tiny-llama", n=20)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from llenergymeasure.config._issues import issues_from_validation_error
from llenergymeasure.config._yaml import YamlDocument, deep_merge, load_yaml_document
from llenergymeasure.config.models import ExperimentConfig, StudyConfig, cross_field_problems
from llenergymeasure.config.provenance import flatten, provenance_for, unflatten_overrides
from llenergymeasure.config.study_design import (
    apply_experiment_overrides,
    batch_size_overrides,
    check_study_structure,
    split_overrides,
)
from llenergymeasure.config.user_config import UserConfig, load_user_config
from llenergymeasure.exceptions import ConfigError, ConfigIssue, ConfigValidationError

STUDY_MARKERS = ("sweep", "experiments", "base", "study_name")
CLI_SOURCE = "command line"


@dataclass
class LoadedConfig:
    """A loaded configuration: the experiment (for an experiment file), the study (always),
    and the source of every effective value (``default`` | ``user_config`` | ``file`` | ``cli``)."""

    kind: Literal["experiment", "study"]
    experiment: ExperimentConfig | None
    study: StudyConfig
    provenance: dict[str, str]
    source_path: Path | None
    notes: list[str] = field(default_factory=list)
    user_config: UserConfig | None = None
    cli_overrides: dict[str, Any] = field(default_factory=dict)  # experiment-level, nested


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    *,
    user_config: UserConfig | None = None,
    batch_size: int | None = None,
) -> LoadedConfig:
    """Load an experiment or study YAML (or, with ``path=None``, overrides alone).

    Usage: ``load_config("study.yaml", {"execution.n_cycles": 3})`` or
    ``load_config(None, {"model": "tiny-llama", "n": 20})``. ``overrides`` keys may be
    dotted; ``None`` values mean "not given". ``batch_size`` (``--batch-size``) sets the
    batching field of every backend the file uses (``ssot.BATCH_SIZE_FIELDS``).
    ``user_config`` defaults to :func:`load_user_config`. Raises ConfigValidationError
    listing every problem.
    """
    uc = user_config if user_config is not None else load_user_config()
    cli = unflatten_overrides(overrides)
    if path is None:
        if not cli:
            raise ConfigError("nothing to load -> give a config file or at least a model")
        doc = YamlDocument({})
    else:
        doc = load_yaml_document(path)
    if batch_size is not None:
        cli = deep_merge(cli, batch_size_overrides(doc.data, cli, batch_size))
    if any(key in doc.data for key in STUDY_MARKERS):
        return _load_study(doc, cli, uc)
    return _load_experiment(doc, cli, uc)


def load_experiment_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    *,
    user_config: UserConfig | None = None,
) -> ExperimentConfig:
    """Load an experiment file (a study file is an error saying to use ``run_study``)."""
    loaded = load_config(path, overrides, user_config=user_config)
    if loaded.experiment is None:
        raise ConfigError(
            f"{path} is a study (it has sweep:/experiments:/base:/study_name:) -> "
            "load it with load_study_config / run_study"
        )
    return loaded.experiment


def load_study_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    *,
    user_config: UserConfig | None = None,
) -> StudyConfig:
    """Load a study file; an experiment file gives a one-experiment study."""
    return load_config(path, overrides, user_config=user_config).study


def experiment_from_kwargs(**kwargs: Any) -> ExperimentConfig:
    """Build an ExperimentConfig from keywords (``model="tiny-llama", n=20``, nested dicts
    or dotted keys via ``**{"pytorch.batch_size": 8}``), with user-config defaults."""
    experiment = load_config(None, kwargs).experiment
    assert experiment is not None  # no file: always an experiment
    return experiment


# ---- experiments ------------------------------------------------------------------------
def _load_experiment(doc: YamlDocument, cli: dict[str, Any], uc: UserConfig) -> LoadedConfig:
    """Validate an experiment; wrap it in a one-experiment study."""
    study_cli, exp_cli = split_overrides(cli)
    chosen, defaults = uc.experiment_defaults()
    raw = deep_merge(deep_merge({**defaults, **chosen}, doc.data), exp_cli)
    locate = _locator(doc, exp_cli)
    cfg = _validate(ExperimentConfig, raw, locate, _source(doc))
    layers = [("default", defaults), ("user_config", chosen), ("file", doc.data), ("cli", exp_cli)]
    provenance = provenance_for(cfg.model_dump(mode="json"), layers)
    study_data = deep_merge(
        {
            "study_name": cfg.name or "experiment",
            "experiments": [deep_merge(doc.data, exp_cli)],
            "execution": _execution_defaults(uc),
            "slurm": uc.slurm_defaults(),
        },
        study_cli,
    )
    study = _validate(StudyConfig, study_data, _locator(doc, study_cli), _source(doc))
    provenance.update(_execution_provenance(study, uc, {}, study_cli))
    return LoadedConfig("experiment", cfg, study, provenance, _path(doc), [], uc, exp_cli)


# ---- studies ----------------------------------------------------------------------------
def _load_study(doc: YamlDocument, cli: dict[str, Any], uc: UserConfig) -> LoadedConfig:
    """Validate a study's own fields and the structure of its base/experiments/sweep."""
    study_cli, exp_cli = split_overrides(cli)
    data = deep_merge(
        {"execution": _execution_defaults(uc), "slurm": uc.slurm_defaults()}, doc.data
    )
    data = deep_merge(data, study_cli)
    notes = apply_experiment_overrides(data, exp_cli) if exp_cli else []
    locate = _locator(doc, {**study_cli, **{f"base.{k}": v for k, v in exp_cli.items()}})
    issues = [_placed(i, locate) for i in check_study_structure(data)]
    try:
        study = _validate(StudyConfig, data, locate, _source(doc))
    except ConfigValidationError as e:
        raise ConfigValidationError(_sorted(e.issues + issues), source=_source(doc)) from e
    if issues:
        raise ConfigValidationError(_sorted(issues), source=_source(doc))
    provenance = _study_provenance(study, doc.data, uc, study_cli, exp_cli)
    return LoadedConfig("study", None, study, provenance, _path(doc), notes, uc, exp_cli)


def _study_provenance(
    study: StudyConfig,
    file_data: Mapping[str, Any],
    uc: UserConfig,
    study_cli: Mapping[str, Any],
    exp_cli: Mapping[str, Any],
) -> dict[str, str]:
    """Sources of the study's fields, its base's leaves and its execution settings."""
    effective = _index_lists(study.model_dump(mode="json", exclude={"execution", "slurm"}))
    layers = [
        ("file", _index_lists(file_data)),
        ("cli", {**study_cli, "base": exp_cli}),
    ]
    provenance = provenance_for(effective, layers)
    provenance.update(_execution_provenance(study, uc, file_data, study_cli))
    return provenance


def _execution_provenance(
    study: StudyConfig, uc: UserConfig, file_data: Mapping[str, Any], cli: Mapping[str, Any]
) -> dict[str, str]:
    """``execution.*`` and ``slurm.*`` sources: gap and executor defaults come from the
    user config, and so do the ``slurm:`` values the user set there."""
    layers = [
        ("user_config", {"execution": _execution_defaults(uc), "slurm": uc.slurm_defaults()}),
        ("file", {k: file_data.get(k) or {} for k in ("execution", "slurm")}),
        ("cli", {k: cli.get(k) or {} for k in ("execution", "slurm")}),
    ]
    effective = {
        "execution": study.execution.model_dump(mode="json"),
        "slurm": study.slurm.model_dump(mode="json"),
    }
    return provenance_for(effective, layers)


def _execution_defaults(uc: UserConfig) -> dict[str, Any]:
    """Gap defaults from the user config (a study's own execution: settings win)."""
    return uc.execution.model_dump()


def _index_lists(data: Mapping[str, Any]) -> dict[str, Any]:
    """``experiments: [..]`` as ``{"0": .., "1": ..}`` so provenance reaches its leaves."""
    result = dict(data)
    if isinstance(result.get("experiments"), list):
        result["experiments"] = {str(i): e for i, e in enumerate(result["experiments"])}
    return result


# ---- shared -----------------------------------------------------------------------------
def _validate(model_cls: type[Any], data: dict[str, Any], locate: Any, source: str) -> Any:
    """``model_cls.model_validate(data)``; all problems raised together with file/line."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        issues = issues_from_validation_error(e, model_cls=model_cls, data=data, locate=locate)
        if model_cls is ExperimentConfig:
            issues += _cross_field_issues(data, issues, locate)
        raise ConfigValidationError(_sorted(issues), source=source) from e


def _cross_field_issues(
    data: dict[str, Any], known: list[ConfigIssue], locate: Any
) -> list[ConfigIssue]:
    """Cross-field problems not already reported (pydantic skips them when fields fail)."""
    seen = {(i.path, i.message) for i in known}
    seen_paths = {i.path for i in known}
    out: list[ConfigIssue] = []
    for path, message in cross_field_problems(data):
        if (path, message) in seen or path in seen_paths:
            continue
        head, _, fix = message.partition(": ")
        out.append(_placed(ConfigIssue(path, head, fix or None), locate))
    return out


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Issues in file order (those without a line last, in their original order)."""
    return sorted(issues, key=lambda i: (i.file or "", i.line is None, i.line or 0))


def _locator(doc: YamlDocument, cli: Mapping[str, Any]) -> Any:
    """Map a dotted path to (file, line), or to the command line for overridden values."""
    cli_leaves = set(flatten(cli))

    def locate(path: str) -> tuple[str | None, int | None]:
        probe = path
        while probe:
            if probe in cli_leaves:
                return CLI_SOURCE, None
            probe = probe.rpartition(".")[0]
        return doc.locate(path)

    return locate


def _placed(issue: ConfigIssue, locate: Any) -> ConfigIssue:
    """The issue with file and line filled in."""
    file, line = locate(issue.path)
    return ConfigIssue(issue.path, issue.message, issue.fix, file, line)


def _source(doc: YamlDocument) -> str:
    """How to name the configuration in an error heading."""
    return str(doc.chain[0]) if doc.chain else "command-line options"


def _path(doc: YamlDocument) -> Path | None:
    """The loaded file (None when built from overrides alone)."""
    return doc.chain[0] if doc.chain else None


__all__ = [
    "LoadedConfig",
    "experiment_from_kwargs",
    "load_config",
    "load_experiment_config",
    "load_study_config",
]
