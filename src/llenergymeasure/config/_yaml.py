"""Read configuration YAML with the line of every key, and resolve ``_extends:`` chains.

``yaml.safe_load`` loses positions, so a file is composed into nodes first and every mapping
key's line is recorded under its dotted path (``pytorch.batch_size``; list items by index,
``experiments.0.model``). File-level problems (missing file, a directory, empty file, YAML
syntax error, a top level that is not a mapping, an ``_extends`` cycle) raise
:class:`ConfigValidationError` naming the file and, where known, the line.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llenergymeasure.exceptions import ConfigIssue, ConfigValidationError

EXTENDS_KEY = "_extends"

#: dotted path -> (file, 1-based line)
Locations = dict[str, tuple[str, int]]


@dataclass
class YamlDocument:
    """A configuration mapping with the file and line each key came from."""

    data: dict[str, Any]
    locations: Locations = field(default_factory=dict)
    chain: list[Path] = field(default_factory=list)  # the file first, then what it extends

    def locate(self, path: str) -> tuple[str | None, int | None]:
        """File and line of ``path``, or of its closest ancestor that has one."""
        probe = path
        while probe:
            if probe in self.locations:
                return self.locations[probe]
            probe = probe.rpartition(".")[0]
        return (str(self.chain[0]) if self.chain else None), None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` over ``base``, recursing where both hold mappings."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml_document(path: str | Path) -> YamlDocument:
    """Read ``path`` and every file it ``_extends`` (child keys win); lines kept per key."""
    return _load_chain(Path(path), [])


def _load_chain(path: Path, stack: list[Path], via_line: int | None = None) -> YamlDocument:
    """Load one file, then its parent (recursively), detecting cycles.

    ``via_line`` is the line of the ``_extends:`` key (in ``stack[-1]``) that named ``path``.
    """
    resolved = path.expanduser().resolve()
    if resolved in stack:
        names = " -> ".join(str(p) for p in [*stack, resolved])
        raise _file_error(
            stack[-1],
            f"_extends cycle: {names}",
            "remove one of the _extends links so the chain ends",
            key=EXTENDS_KEY,
            line=via_line,
        )
    data, lines = read_yaml_mapping(resolved)
    locations: Locations = {k: (str(resolved), v) for k, v in lines.items()}
    parent_ref = data.pop(EXTENDS_KEY, None)
    if parent_ref is None:
        return YamlDocument(data, locations, [resolved])
    parent_path = _extends_target(resolved, parent_ref, lines.get(EXTENDS_KEY))
    if not parent_path.is_file():
        raise _file_error(
            resolved,
            f"_extends names {parent_ref!r}, which is not a file ({parent_path})",
            "give a path relative to this file",
            key=EXTENDS_KEY,
            line=lines.get(EXTENDS_KEY),
        )
    parent = _load_chain(parent_path, [*stack, resolved], lines.get(EXTENDS_KEY))
    merged_locations = {**parent.locations, **locations}
    merged_locations.pop(EXTENDS_KEY, None)
    return YamlDocument(deep_merge(parent.data, data), merged_locations, [resolved, *parent.chain])


def _extends_target(child: Path, ref: Any, line: int | None) -> Path:
    """The file an ``_extends:`` value names, relative to the child's directory."""
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigValidationError(
            [
                ConfigIssue(
                    EXTENDS_KEY,
                    f"_extends must be a file path, got {ref!r}",
                    "write _extends: other.yaml (relative to this file)",
                    str(child),
                    line,
                )
            ],
            source=str(child),
        )
    target = Path(ref).expanduser()
    return target if target.is_absolute() else child.parent / target


def read_yaml_mapping(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse one YAML file that must hold a mapping; return it and each key's line."""
    text = _read_text(path)
    if not text.strip():
        raise _file_error(path, "the file is empty", "write at least `model: <name>`")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(path, e) from e
    except yaml.YAMLError as e:
        raise _file_error(path, f"YAML error: {e}", "fix the YAML syntax") from e
    finally:
        loader.dispose()
    if data is None:
        raise _file_error(path, "the file holds no settings", "write at least `model: <name>`")
    if not isinstance(data, dict):
        raise _file_error(
            path,
            f"the top level is a {type(data).__name__}, not a mapping of settings",
            "write `key: value` lines at the top level (e.g. `model: tiny-llama`)",
            line=1,
        )
    assert node is not None  # data is a dict, so a node was composed
    lines: dict[str, int] = {}
    duplicates: list[ConfigIssue] = []
    _record_lines(node, "", lines, duplicates, str(path))
    if duplicates:
        raise ConfigValidationError(duplicates, source=str(path))
    return data, lines


def _read_text(path: Path) -> str:
    """The file's text, or a ConfigValidationError saying why it cannot be read."""
    if not path.exists():
        raise _file_error(path, "file not found", "check the path (relative to where you run llem)")
    if path.is_dir():
        raise _file_error(path, "is a directory, not a YAML file", "give the path of a .yaml file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _file_error(path, f"cannot read the file: {e}", "check permissions/encoding") from e


def _record_lines(
    node: yaml.Node, prefix: str, lines: dict[str, int], issues: list[ConfigIssue], file: str
) -> None:
    """Walk composed nodes, storing each key's line under its dotted path."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key == "<<":  # YAML merge key: its keys are attributed to the anchor
                continue
            path = f"{prefix}.{key}" if prefix else key
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    ConfigIssue(path, f"duplicate key {key!r}", "keep only one of them", file, line)
                )
            seen.add(key)
            lines[path] = line
            _record_lines(value_node, path, lines, issues, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = f"{prefix}.{index}"
            lines[path] = item.start_mark.line + 1
            _record_lines(item, path, lines, issues, file)


def _syntax_error(path: Path, e: yaml.MarkedYAMLError) -> ConfigValidationError:
    """A YAML syntax error at the line yaml reported."""
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark is not None else None
    column = f", column {mark.column + 1}" if mark is not None else ""
    problem = e.problem or str(e)
    context = f" ({e.context})" if e.context else ""
    return ConfigValidationError(
        [
            ConfigIssue(
                "",
                f"YAML syntax error{column}: {problem}{context}",
                "fix the indentation/quoting on that line (tabs are not allowed in YAML)",
                str(path),
                line,
            )
        ],
        source=str(path),
    )


def _file_error(
    path: Path, message: str, fix: str, *, key: str = "", line: int | None = None
) -> ConfigValidationError:
    """One file-level issue as an error."""
    return ConfigValidationError(
        [ConfigIssue(key, message, fix, str(path), line)], source=str(path)
    )
