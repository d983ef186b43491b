"""Exception tree for llenergymeasure.

    LLEMError                      base of everything the tool raises on purpose
    ├── ConfigError                bad configuration or input (CLI exit code 2)
    │   ├── ConfigValidationError  one or more field problems, all reported together
    │   └── ResultsError           a results directory holds no readable results
    ├── BackendError               an inference backend failed or is missing
    │   └── BackendNotInstalledError
    ├── MeterError                 an energy meter could not measure
    ├── PreflightError             checks before a run found problems (all listed; exit 2)
    ├── ExperimentError            an experiment failed while running
    │   └── ResultNotSavedError    it measured, but its result.json could not be written
    ├── WriteError (also OSError)  a file could not be written: names the path and errno
    ├── ResultFileError (also ValueError)  a result file is not a valid result: names it
    ├── StudyError                 a study could not go on (too many failures, ...)
    │   ├── StudyDirError          the study directory cannot be resumed (exit 2): corrupt
    │   │                          or missing manifest, a changed design
    │   └── StudyLockedError       another runner holds the study directory (exit 2)
    └── ExtraNotInstalledError     an optional extra (e.g. ``report``) is missing (exit code 2)

Vendor exceptions are translated once, at the boundary, with ``raise ... from e``.
Every message says what to do next.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    """Checks before a run found one or more problems; all are listed. Each is a problem
    of the configuration or input for this machine (CLI exit code 2)."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:  # one problem, one line
            super().__init__(f"pre-flight check failed: {self.problems[0]}")
            return
        super().__init__(
            "Pre-flight checks failed:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


class ExperimentError(LLEMError):
    """An experiment failed while running."""


class ResultNotSavedError(ExperimentError):
    """The experiment measured, but its result could not be written: ``result`` holds the
    measurement (the CLI prints its full summary, so nothing measured is lost)."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


_WRITE_FIXES = {
    _errno.ENOSPC: "free space on that file system, or choose another results directory (-o)",
    _errno.EDQUOT: "free space within your quota, or choose another results directory (-o)",
    _errno.EROFS: "the file system is read-only: choose another results directory (-o)",
    _errno.EACCES: "check the directory's permissions, or choose another results directory",
    _errno.EPERM: "check the directory's permissions, or choose another results directory",
}


class WriteError(LLEMError, OSError):
    """Writing ``path`` failed; the message names the path, the errno text and a fix.

    An OSError too (same ``errno``), so ``except OSError`` code keeps working.
    """

    def __init__(self, path: Path | str, error: OSError) -> None:
        code = error.errno
        text = error.strerror or (os.strerror(code) if code else str(error))
        OSError.__init__(self, code, text, str(path))
        self.path = Path(path)
        fix = _WRITE_FIXES.get(code or 0, "check the results directory")
        self.message = f"could not write {path}: {text} -> {fix}"

    def __str__(self) -> str:
        return self.message


class ResultFileError(LLEMError, ValueError):
    """A file that should hold a result (or a summary) does not: names the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


class StudyError(LLEMError):
    """A study could not continue (e.g. resume refused, too many consecutive failures)."""


class StudyDirError(StudyError):
    """The study directory cannot be resumed as asked (bad input: exit code 2)."""

    exit_code = 2


class StudyLockedError(StudyError):
    """Another runner holds the study directory (exit code 2); names its pid and host."""

    exit_code = 2

    def __init__(self, study_dir: Path, holder: dict[str, Any]) -> None:
        self.study_dir = study_dir
        self.holder = holder
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = f", since {holder['since']}" if holder.get("since") else ""
        super().__init__(
            f"study directory {study_dir} is in use by another llem run ({who}{since}) -> "
            "wait for it to finish, or stop that process, then resume"
        )


class ExtraNotInstalledError(LLEMError):
    """An optional extra is not installed; the message carries the ``pip install`` command."""

    exit_code = 2


class ResultsError(ConfigError):
    """Saved results could not be found or read (e.g. a directory holding no result.json)."""
