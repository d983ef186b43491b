"""Translate pydantic ``ValidationError``s into :class:`ConfigIssue`s a person can act on.

Each issue names the dotted field path, what is wrong and the fix: unknown keys get a
"did you mean" (difflib over the field names at that level, and at the top level over the
backend sections' fields too), type errors say what was expected and what was given,
literal errors list the allowed values, and model-level validator errors (empty ``loc``) are
attributed to the field their message starts with.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from llenergymeasure.config import ssot
from llenergymeasure.config.backend_configs import BACKEND_SECTIONS
from llenergymeasure.config.introspection import field_paths, model_at, nested_models
from llenergymeasure.config.models import MAX_N, ExperimentConfig
from llenergymeasure.exceptions import ConfigIssue

Locator = Callable[[str], tuple[str | None, int | None]]

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping (key: value lines)",
    "model": "a mapping (key: value lines)",
}


@dataclass
class _Resolved:
    """Where an error points: field segments, the model owning the last one, and whether the
    error came from a union branch that does not match the input's type (then it is noise)."""

    segments: list[str]
    branch_mismatch: bool = False


def issues_from_validation_error(
    err: ValidationError,
    *,
    model_cls: type[BaseModel],
    data: Mapping[str, Any],
    prefix: str = "",
    locate: Locator | None = None,
    structural_only: bool = False,
) -> list[ConfigIssue]:
    """All issues of ``err`` (validated ``data`` against ``model_cls``), one per problem.

    ``prefix`` is prepended to field paths (``base.`` for a study's base); ``locate`` maps a
    full dotted path to (file, line). ``structural_only`` keeps only unknown keys and
    field-level type/range errors (used for partial dicts such as a study's ``base:``).
    """
    issues: list[ConfigIssue] = []
    for error in err.errors(include_url=False):
        resolved = _resolve(model_cls, error["loc"], data)
        if resolved.branch_mismatch:
            continue
        if structural_only and not _is_structural(model_cls, error, resolved):
            continue
        issue = _issue_for(model_cls, error, resolved, data)
        path = ".".join(p for p in (prefix.rstrip("."), issue.path) if p)
        file, line = locate(path) if locate else (None, None)
        issue = ConfigIssue(path, issue.message, issue.fix, file, line)
        if issue not in issues:
            issues.append(issue)
    return issues


def _resolve(model_cls: type[BaseModel], loc: tuple[Any, ...], data: Any) -> _Resolved:
    """Follow ``loc`` through the models, dropping union-member tags from the path."""
    segments: list[str] = []
    current: type[BaseModel] | None = model_cls
    union_models: list[type[BaseModel]] | None = None  # set right after a union-typed field
    for part in loc:
        if isinstance(part, int):
            segments.append(str(part))
            current, union_models = None, None
            continue
        if union_models is not None:  # this part is a union tag, not a key
            raw = _get(data, segments)
            chosen = next((m for m in union_models if m.__name__ == part), None)
            if (chosen is None) == isinstance(raw, Mapping):  # primitive tag vs mapping input
                return _Resolved(segments, branch_mismatch=True)
            current, union_models = chosen, None
            continue
        segments.append(part)
        if current is None or part not in current.model_fields:
            current = None
            continue
        annotation = current.model_fields[part].annotation
        models = nested_models(annotation)
        union_models = models if _is_tagged_union(annotation) else None
        current = models[0] if len(models) == 1 and union_models is None else None
    return _Resolved(segments)


def _is_tagged_union(annotation: Any) -> bool:
    """Unions of a model and a non-None type make pydantic add a tag segment to ``loc``."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return len(args) > 1 and bool(nested_models(annotation))


def _get(data: Any, segments: list[str]) -> Any:
    """The raw input at ``segments`` (None where absent)."""
    for segment in segments:
        if isinstance(data, Mapping):
            data = data.get(segment)
        elif isinstance(data, list) and segment.isdigit() and int(segment) < len(data):
            data = data[int(segment)]
        else:
            return None
    return data


def _is_structural(model_cls: type[BaseModel], error: Any, resolved: _Resolved) -> bool:
    """Unknown keys and field-level value errors; not missing fields or cross-field rules."""
    if error["type"] == "missing":
        return False
    if error["type"] in ("value_error", "assertion_error"):
        return bool(resolved.segments) and model_at(model_cls, resolved.segments) is None
    return True


def _issue_for(
    model_cls: type[BaseModel], error: Any, resolved: _Resolved, data: Mapping[str, Any]
) -> ConfigIssue:
    """One issue (path relative to ``model_cls``; no file/line yet)."""
    kind: str = error["type"]
    segments = resolved.segments
    given = _show(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(model_cls, segments, data)
    if kind in ("value_error", "assertion_error"):
        return _validator_issue(model_cls, segments, str(ctx.get("error", error["msg"])))
    path = ".".join(segments)
    if kind == "missing":
        return ConfigIssue(path, "required field missing", _missing_fix(segments))
    if kind == "literal_error" and error.get("input") is None and "'null'" in str(ctx):
        return ConfigIssue(path, "an unquoted null is YAML's empty value", "write 'null' in quotes")
    if kind == "literal_error":
        return ConfigIssue(path, f"{given} is not an allowed value", f"use {ctx.get('expected')}")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return _range_issue(path, kind, error.get("input"), ctx)
    for prefix_word, words in _TYPE_WORDS.items():
        if kind.startswith(prefix_word + "_"):
            return ConfigIssue(
                path, f"expected {words}, got {given}", f"write {words} for {_field_word(segments)}"
            )
    if kind in ("too_short", "string_too_short"):
        return ConfigIssue(path, "must not be empty", "give a value")
    return ConfigIssue(path, str(error["msg"]), None)


def _field_word(segments: list[str]) -> str:
    """The last non-index segment (``gpus`` for ``gpus.1``)."""
    return next((s for s in reversed(segments) if not s.isdigit()), "this field")


def _show(value: Any) -> str:
    """A short rendering of an input value for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _range_issue(path: str, kind: str, value: Any, ctx: Mapping[str, Any]) -> ConfigIssue:
    """A number outside its allowed range."""
    bound_key = {"greater_than_equal": "ge", "greater_than": "gt"}.get(kind) or (
        "le" if kind == "less_than_equal" else "lt"
    )
    op = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[bound_key]
    bound = ctx.get(bound_key)
    message = f"must be {op} {bound}, got {_show(value)}"
    fix = f"use a value {op} {bound}"
    if path.rsplit(".", 1)[-1] == "n" and bound_key in ("le", "lt") and bound == MAX_N:
        message = f"{_show(value)} prompts is absurd (more than {MAX_N:,})"
        fix = f"use n between 1 and {MAX_N:,} (a typo?)"
    return ConfigIssue(path, message, fix)


def _missing_fix(segments: list[str]) -> str:
    """How to supply a missing required field."""
    if segments == ["model"]:
        from llenergymeasure.catalogue.architectures import list_architectures

        names = ", ".join(list_architectures()[:6])
        return f"add `model: <Hugging Face id, local path, or one of {names}, ...>`"
    return f"add `{segments[-1]}: <value>`" if segments else "add the missing field"


def _unknown_key(
    model_cls: type[BaseModel], segments: list[str], data: Mapping[str, Any]
) -> ConfigIssue:
    """An unknown key with the closest valid key as a suggestion."""
    key, parent = segments[-1], segments[:-1]
    owner = model_at(model_cls, parent) if parent else model_cls
    candidates = _candidates(owner, top_level=not parent and owner is ExperimentConfig, data=data)
    path = ".".join(segments)
    message = f"unknown key {key!r}"
    if key in candidates and candidates[key] != key:
        return ConfigIssue(path, message, f"move it under its section: {candidates[key]}")
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if close:
        target = candidates[close[0]]
        where = f" (under '{target.rsplit('.', 1)[0]}:')" if "." in target else ""
        return ConfigIssue(path, message, f"did you mean {close[0]!r}{where}?")
    valid = ", ".join(sorted(n for n, t in candidates.items() if "." not in t))
    return ConfigIssue(path, message, f"remove it; valid keys here: {valid}")


def _candidates(
    owner: type[BaseModel] | None, *, top_level: bool, data: Mapping[str, Any]
) -> dict[str, str]:
    """Valid key names at a level -> the path to suggest for each."""
    if owner is None:
        return {}
    names = {name: name for name in owner.model_fields}
    if top_level:  # a backend field written at the top level: suggest its section
        backend = str(data.get("backend", "pytorch"))
        order = [backend, *[b for b in ssot.BACKENDS if b != backend]]
        for section in order:
            section_cls = BACKEND_SECTIONS.get(section)
            for field in section_cls.model_fields if section_cls else ():
                names.setdefault(field, f"{section}.{field}")
    return names


def _validator_issue(model_cls: type[BaseModel], segments: list[str], text: str) -> ConfigIssue:
    """A validator's message; model-level ones are attributed to the field named first."""
    text = text.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message, _, fix = text.partition(": ")
    owner = model_at(model_cls, segments) if segments else model_cls
    if owner is not None:  # the error belongs to a model, not a leaf: find the field
        segments = segments + _field_named_in(owner, text)
    return ConfigIssue(".".join(segments), message, fix or None)


def _field_named_in(owner: type[BaseModel], text: str) -> list[str]:
    """Segments of the field a message starts with (first two words), or []."""
    known = set(field_paths(owner))
    for word in text.split()[:2]:
        token = word.strip("'\"`:,.()")
        if token in known:
            return token.split(".")
    return []
