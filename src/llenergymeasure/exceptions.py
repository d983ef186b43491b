"""Exception tree for llenergymeasure.

    LLEMError                      base of everything the tool raises on purpose
    ├── ConfigError                bad configuration or input (CLI exit code 2)
    │   ├── ConfigValidationError  one or more field problems, all reported together
    │   └── ResultsError           a results directory holds no readable results
    ├── BackendError               an inference backend failed or is missing
    │   └── BackendNotInstalledError
    ├── MeterError                 an energy meter could not measure
    ├── PreflightError             checks before a run found problems (all listed)
    ├── ExperimentError            an experiment failed while running
    ├── StudyError                 a study could not go on (resume refused, too many failures)
    └── ExtraNotInstalledError     an optional extra (e.g. ``report``) is missing (exit code 2)

Vendor exceptions are translated once, at the boundary, with ``raise ... from e``.
Every message says what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass


class LLEMError(Exception):
    """Base class for errors raised by llenergymeasure."""

    exit_code: int = 1


class ConfigError(LLEMError):
    """Bad configuration or input: the user must change something."""

    exit_code = 2


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration, with where it is and how to fix it."""

    path: str  # dotted field path, e.g. "pytorch.batch_size" ("" for the whole file)
    message: str  # what is wrong
    fix: str | None = None  # what to do about it
    file: str | None = None
    line: int | None = None

    def render(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        loc = f"{where}: " if where else ""
        field = f"{self.path}: " if self.path else ""
        text = f"{loc}{field}{self.message}"
        if self.fix:
            text += f" -> {self.fix}"
        return text


class ConfigValidationError(ConfigError):
    """All problems found in one configuration, reported together."""

    def __init__(self, issues: list[ConfigIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"{len(self.issues)} problem(s) in {source or 'configuration'}:"
        super().__init__("\n".join([head, *("  - " + i.render() for i in self.issues)]))


class BackendError(LLEMError):
    """An inference backend failed."""


class BackendNotInstalledError(BackendError):
    """A backend's package is not importable; the message carries the install command."""

    exit_code = 2


class MeterError(LLEMError):
    """An energy meter could not measure."""


class PreflightError(LLEMError):
    """Checks before a run found one or more problems; all are listed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "Pre-flight checks failed:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


class ExperimentError(LLEMError):
    """An experiment failed while running."""


class StudyError(LLEMError):
    """A study could not continue (e.g. resume refused, too many consecutive failures)."""


class ExtraNotInstalledError(LLEMError):
    """An optional extra is not installed; the message carries the ``pip install`` command."""

    exit_code = 2


class ResultsError(ConfigError):
    """Saved results could not be found or read (e.g. a directory holding no result.json)."""
