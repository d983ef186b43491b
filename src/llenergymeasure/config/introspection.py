"""Read the config models' structure from pydantic: JSON schema, field paths, nested models.

One source of truth: error suggestions ("did you mean …"), sweep-key checks, ``llem config
--schema`` and docs all read the models through these functions instead of listing fields.

Usage::

    schema = config_json_schema()              # {"ExperimentConfig": {...}, "StudyConfig": {...}}
    field_paths(ExperimentConfig)              # ["name", "model", ..., "pytorch.batch_size", ...]
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from llenergymeasure.config.models import ExperimentConfig, StudyConfig


def config_json_schema() -> dict[str, Any]:
    """JSON schema of ExperimentConfig and StudyConfig in one document.

    Usage: ``json.dumps(config_json_schema(), indent=2)`` for ``llem config --schema``.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "llenergymeasure configuration",
        "description": "An experiment YAML validates against ExperimentConfig; a study YAML "
        "(with sweep:, experiments: or study_name:) against StudyConfig.",
        "ExperimentConfig": ExperimentConfig.model_json_schema(),
        "StudyConfig": StudyConfig.model_json_schema(),
    }


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes an annotation can hold (``X | None``, unions, plain X)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found.extend(nested_models(arg))
        return found
    return []


def field_paths(model_cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field of ``model_cls`` (nested models expanded).

    A field that can hold a model (``pytorch: PyTorchConfig | None``) contributes its own
    name as well as its sub-fields, so both ``pytorch`` and ``pytorch.batch_size`` appear.
    """
    paths: list[str] = []
    for name, info in model_cls.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        for sub in nested_models(info.annotation):
            paths.extend(p for p in field_paths(sub, f"{path}.") if p not in paths)
    return paths


def model_at(model_cls: type[BaseModel], segments: list[str]) -> type[BaseModel] | None:
    """The model class reached by following field names ``segments``; None if not a model."""
    current: type[BaseModel] | None = model_cls
    for segment in segments:
        if current is None or segment not in current.model_fields:
            return None
        models = nested_models(current.model_fields[segment].annotation)
        current = models[0] if models else None
    return current


def open_dict_prefixes(model_cls: type[BaseModel]) -> list[str]:
    """Fields typed as free-form dicts (``passthrough_kwargs``): any sub-key is allowed."""
    found = []
    for name, info in model_cls.model_fields.items():
        annotation = info.annotation
        args = typing.get_args(annotation) or (annotation,)
        if any(a is dict or typing.get_origin(a) is dict for a in args):
            found.append(name)
    return found
