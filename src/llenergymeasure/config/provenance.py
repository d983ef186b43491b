"""Where each effective configuration value came from.

Sources, lowest priority first: ``default`` (the model's default), ``user_config`` (the
user's config file or LLEM_* variables), ``file`` (the experiment/study YAML, including what
it ``_extends``), ``cli`` (command-line or keyword overrides). Provenance maps every leaf's
dotted path (``pytorch.batch_size``) to the source of its effective value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llenergymeasure.exceptions import ConfigIssue, ConfigValidationError

SOURCES = ("default", "user_config", "file", "cli")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested mapping by dotted path (lists and empty mappings are leaves)."""
    leaves: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            leaves.update(flatten(value, f"{path}."))
        else:
            leaves[path] = value
    return leaves


def unflatten_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"pytorch.batch_size": 8, "n": 20}`` -> nested dict; ``None`` values mean "not given".

    Raises ConfigValidationError when two keys collide (``pytorch: 8`` and
    ``pytorch.batch_size: 8``).
    """
    nested: dict[str, Any] = {}
    issues: list[ConfigIssue] = []
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        for path, leaf in (
            flatten(value, f"{key}.") if isinstance(value, Mapping) else {key: value}
        ).items():
            issue = _set_override(nested, path, leaf)
            if issue:
                issues.append(issue)
    if issues:
        raise ConfigValidationError(issues, source="command-line overrides")
    return nested


def _set_override(target: dict[str, Any], path: str, value: Any) -> ConfigIssue | None:
    """Set one dotted override; an issue if a scalar is already where a section should be."""
    *parents, leaf = path.split(".")
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            return ConfigIssue(path, f"conflicts with the override of {part!r}", "give only one")
        target = child
    if isinstance(target.get(leaf), dict):
        return ConfigIssue(path, "conflicts with overrides of its sub-keys", "give only one")
    target[leaf] = value
    return None


def provenance_for(
    effective: Mapping[str, Any], layers: Sequence[tuple[str, Mapping[str, Any]]], prefix: str = ""
) -> dict[str, str]:
    """Source of every leaf of ``effective``: the last layer (lowest priority first) that set it.

    A layer sets a leaf when it holds that path or an ancestor of it as a leaf (e.g. a layer
    giving ``gpus: [0, 1]`` sets ``gpus``); leaves no layer set are ``default``.
    """
    layer_leaves = [
        (name, {p for p, v in flatten(data).items() if not isinstance(v, Mapping)})
        for name, data in layers
    ]
    result: dict[str, str] = {}
    for path in flatten(effective):
        source = "default"
        for name, leaves in layer_leaves:
            if _set_by(path, leaves):
                source = name
        result[f"{prefix}{path}"] = source
    return result


def _set_by(path: str, leaves: set[str]) -> bool:
    """True when ``path`` or one of its ancestors is among ``leaves``."""
    probe = path
    while probe:
        if probe in leaves:
            return True
        probe = probe.rpartition(".")[0]
    return False
