"""User config: how *this machine* runs experiments (never what to measure, never secrets).

Read from ``<user config dir>/llenergymeasure/config.yaml`` (``platformdirs``; on Linux
``$XDG_CONFIG_HOME/llenergymeasure/config.yaml``, default ``~/.config/...``); a missing file
means defaults. ``LLEM_*`` environment variables override the file:

==============================  =========================================
``LLEM_RESULTS_DIR``            ``output.results_dir``
``LLEM_ENERGY_BACKEND``         ``measurement.energy_backend``
``LLEM_CARBON_INTENSITY``       ``measurement.carbon_intensity_gco2_kwh``
``LLEM_PUE``                    ``measurement.datacenter_pue``
``LLEM_CONFIG_GAP_SECONDS``     ``execution.config_gap_seconds``
``LLEM_CYCLE_GAP_SECONDS``      ``execution.cycle_gap_seconds``
``LLEM_<SECTION>__<KEY>``       any field, e.g. ``LLEM_RUNNERS__VLLM=docker:img``,
                                ``LLEM_SLURM__PARTITION=gpu``
==============================  =========================================

Every effective value's source is kept in :attr:`UserConfig.provenance`
(``default`` | ``file`` | ``env``). Usage::

    uc = load_user_config()
    uc.output.results_dir, uc.provenance["measurement.datacenter_pue"]
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from llenergymeasure.config import ssot
from llenergymeasure.config._yaml import read_yaml_mapping
from llenergymeasure.config.models import SlurmConfig
from llenergymeasure.config.ssot import EnergyBackendName, Executor
from llenergymeasure.exceptions import ConfigIssue, ConfigValidationError

#: Default grid carbon intensity, gCO2e/kWh: roughly the world-average electricity mix
#: (Ember/IEA put it at ~470-480 g/kWh for 2022-2023). It is a placeholder default, not a
#: fact about your grid: set ``measurement.carbon_intensity_gco2_kwh`` to your region's value.
DEFAULT_CARBON_INTENSITY_GCO2_KWH = 475.0

_SECRET_WORDS = ("token", "secret", "password", "passwd", "api_key", "apikey")

ENV_ALIASES: dict[str, str] = {
    "LLEM_RESULTS_DIR": "output.results_dir",
    "LLEM_ENERGY_BACKEND": "measurement.energy_backend",
    "LLEM_CARBON_INTENSITY": "measurement.carbon_intensity_gco2_kwh",
    "LLEM_PUE": "measurement.datacenter_pue",
    "LLEM_CONFIG_GAP_SECONDS": "execution.config_gap_seconds",
    "LLEM_CYCLE_GAP_SECONDS": "execution.cycle_gap_seconds",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputSettings(_Section):
    """Where results go."""

    results_dir: str = Field("results", description="Results directory (relative to the cwd).")


class MeasurementSettings(_Section):
    """Measurement defaults applied to experiments that do not set them."""

    energy_backend: EnergyBackendName | None = Field(
        None, description="Preferred energy backend; None = the experiment's own (auto)."
    )
    carbon_intensity_gco2_kwh: float = Field(
        DEFAULT_CARBON_INTENSITY_GCO2_KWH,
        ge=0.0,
        le=2000.0,
        description="Grid carbon intensity for CO2 estimates (default: a world-average "
        "placeholder; set your region's value).",
    )
    datacenter_pue: float = Field(1.0, ge=1.0, le=3.0, description="Power usage effectiveness.")


class ExecutionSettings(_Section):
    """Study defaults: the executor, and thermal-recovery gaps (skip with --no-gaps)."""

    executor: Executor = Field(
        "local", description="local | slurm: how studies run unless the study file says"
    )
    config_gap_seconds: float = Field(10.0, ge=0.0, le=3600.0)
    cycle_gap_seconds: float = Field(60.0, ge=0.0, le=3600.0)


class UserConfig(_Section):
    """Per-machine settings (docs/configuration.md, User config). Never holds secrets: use an env-file for tokens."""

    output: OutputSettings = Field(default_factory=OutputSettings)
    runners: dict[str, str] = Field(
        default_factory=dict, description='backend -> "local" or "docker:<image>"'
    )
    measurement: MeasurementSettings = Field(default_factory=MeasurementSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    slurm: SlurmConfig = Field(
        default_factory=SlurmConfig,
        description="defaults for the slurm: section of studies (partition, account, ...)",
    )

    _provenance: dict[str, str] = PrivateAttr(default_factory=dict)
    _source_path: Path | None = PrivateAttr(default=None)

    @field_validator("runners")
    @classmethod
    def _runners(cls, v: dict[str, str]) -> dict[str, str]:
        for backend, runner in v.items():
            if backend not in ssot.BACKENDS:
                raise ValueError(
                    f"runners names unknown backend {backend!r}: use {', '.join(ssot.BACKENDS)}"
                )
            if runner != "local" and not (runner.startswith("docker:") and len(runner) > 7):
                raise ValueError(
                    f"runners.{backend} {runner!r} is not a runner: use local or docker:<image>"
                )
        return v

    @property
    def provenance(self) -> dict[str, str]:
        """Dotted field path -> ``default`` | ``file`` | ``env`` for every effective value."""
        return dict(self._provenance)

    @property
    def source_path(self) -> Path | None:
        """The config file that was read (None when it did not exist)."""
        return self._source_path

    def runner_for(self, backend: str) -> str:
        """``local`` or ``docker:<image>`` for ``backend`` (default local)."""
        return self.runners.get(backend, "local")

    def experiment_defaults(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Experiment fields this config supplies, split into (set by the user, defaults).

        The first dict holds values the user set in the file or environment (provenance
        ``user_config``), the second the user config's own defaults (provenance ``default``).
        ``energy_backend`` is supplied only when set.
        """
        values = {
            "energy_backend": ("measurement.energy_backend", self.measurement.energy_backend),
            "carbon_intensity_gco2_kwh": (
                "measurement.carbon_intensity_gco2_kwh",
                self.measurement.carbon_intensity_gco2_kwh,
            ),
            "datacenter_pue": ("measurement.datacenter_pue", self.measurement.datacenter_pue),
        }
        chosen: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        for field, (path, value) in values.items():
            if value is None:
                continue
            target = defaults if self.value_source(path) == "default" else chosen
            target[field] = value
        return chosen, defaults

    def slurm_defaults(self) -> dict[str, Any]:
        """The ``slurm:`` values the user set (file or environment), for studies' defaults."""
        from llenergymeasure.config.provenance import flatten, unflatten_overrides

        dumped = flatten(self.slurm.model_dump(mode="json"), "slurm.")
        chosen = {k: v for k, v in dumped.items() if self.value_source(k) != "default"}
        section: dict[str, Any] = unflatten_overrides(chosen).get("slurm", {})
        return section

    def value_source(self, path: str) -> str:
        """Where the value at ``path`` came from (``default`` when unknown)."""
        return self._provenance.get(path, "default")


def user_config_path() -> Path:
    """``<platformdirs user config dir>/llenergymeasure/config.yaml`` (XDG respected)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("llenergymeasure")) / "config.yaml"


def load_user_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> UserConfig:
    """Load the user config file (missing default file = defaults), then LLEM_* overrides.

    Usage: ``uc = load_user_config()``. An explicit ``path`` that does not exist is an
    error; a bad file raises ConfigValidationError with file and line; ``environ`` defaults
    to ``os.environ``.
    """
    file_path = Path(path) if path is not None else user_config_path()
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None or file_path.exists():
        data, lines = read_yaml_mapping(file_path)
        _reject_secrets(data, lines, str(file_path))
    env_data, env_sources = _env_overrides(os.environ if environ is None else environ)
    merged = _merge(data, env_data)
    config = _validate(merged, file_path, lines, env_sources)
    config._source_path = file_path if data or path is not None else None
    config._provenance = _provenance(config, data, env_data)
    return config


def _validate(
    merged: dict[str, Any], file_path: Path, lines: dict[str, int], env_sources: dict[str, str]
) -> UserConfig:
    """Validate, converting errors to issues that point at the file line or the env var."""
    from llenergymeasure.config._issues import issues_from_validation_error

    def locate(field_path: str) -> tuple[str | None, int | None]:
        for probe, var in env_sources.items():
            if field_path == probe or field_path.startswith(probe + "."):
                return f"environment variable {var}", None
        probe = field_path
        while probe and probe not in lines:
            probe = probe.rpartition(".")[0]
        return str(file_path), lines.get(probe)

    try:
        return UserConfig.model_validate(merged)
    except ValidationError as e:
        issues = issues_from_validation_error(e, model_cls=UserConfig, data=merged, locate=locate)
        raise ConfigValidationError(issues, source=f"user config {file_path}") from e


def _reject_secrets(data: Any, lines: dict[str, int], file: str, prefix: str = "") -> None:
    """Refuse keys that look like credentials: they belong in an env-file, not here."""
    if not isinstance(data, Mapping):
        return
    issues = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if any(word in str(key).lower() for word in _SECRET_WORDS):
            issues.append(
                ConfigIssue(
                    path,
                    "the user config must not hold secrets",
                    "remove it and pass credentials through the environment or an env-file "
                    "(e.g. HF_TOKEN in a file given to docker --env-file)",
                    file,
                    lines.get(path),
                )
            )
        try:
            _reject_secrets(value, lines, file, f"{path}.")
        except ConfigValidationError as e:
            issues.extend(e.issues)
    if issues:
        raise ConfigValidationError(issues, source=file)


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """LLEM_* variables as a nested dict, and field path -> variable name."""
    nested: dict[str, Any] = {}
    sources: dict[str, str] = {}
    issues: list[ConfigIssue] = []
    for var in sorted(environ):
        if not var.startswith("LLEM_"):
            continue
        path = ENV_ALIASES.get(var) or _generic_env_path(var)
        if path is None:
            if "__" in var:
                issues.append(_unknown_env(var))
            continue
        _set(nested, path, environ[var])
        sources[path] = var
    if issues:
        raise ConfigValidationError(issues, source="environment")
    return nested, sources


def _generic_env_path(var: str) -> str | None:
    """``LLEM_MEASUREMENT__DATACENTER_PUE`` -> ``measurement.datacenter_pue`` if valid."""
    body = var[len("LLEM_") :]
    if "__" not in body:
        return None
    section, _, key = body.lower().partition("__")
    if section not in UserConfig.model_fields or not key:
        return None
    if section == "runners":
        return f"runners.{key}"
    sub = UserConfig.model_fields[section].annotation
    if isinstance(sub, type) and issubclass(sub, BaseModel) and key in sub.model_fields:
        return f"{section}.{key}"
    return None


def _unknown_env(var: str) -> ConfigIssue:
    """An LLEM_X__Y variable that names no user-config field."""
    known = [*ENV_ALIASES, *_generic_env_names()]
    close = difflib.get_close_matches(var, known, n=1, cutoff=0.6)
    fix = f"did you mean {close[0]}?" if close else f"use one of {', '.join(known)}"
    return ConfigIssue(var, "environment variable names no user-config field", fix)


def _generic_env_names() -> list[str]:
    """Every LLEM_<SECTION>__<KEY> name for the sections' fields."""
    names = []
    for section, info in UserConfig.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            names += [f"LLEM_{section.upper()}__{k.upper()}" for k in sub.model_fields]
    return names


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in a nested dict, creating levels."""
    *parents, leaf = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Two-level merge (the user config is shallow)."""
    from llenergymeasure.config._yaml import deep_merge

    return deep_merge(base, override)


def _provenance(
    config: UserConfig, file_data: dict[str, Any], env_data: dict[str, Any]
) -> dict[str, str]:
    """Source of every effective leaf value."""
    from llenergymeasure.config.provenance import flatten

    file_leaves, env_leaves = set(flatten(file_data)), set(flatten(env_data))
    result = {}
    for leaf in flatten(config.model_dump(mode="json")):
        result[leaf] = "env" if leaf in env_leaves else "file" if leaf in file_leaves else "default"
    return result
