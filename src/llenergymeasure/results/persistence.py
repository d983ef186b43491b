"""Crash-safe persistence of results: atomic writes, never overwriting a run.

An atomic write puts the bytes in a temporary file in the *same* directory, flushes and
fsyncs it, renames it over the target with ``os.replace`` (atomic on POSIX and Windows) and
fsyncs the directory so the rename itself survives a power cut. A reader therefore sees the
old file or the new one, never a partial one.

Files are created with the mode an ordinary ``open`` would give them (``0o666`` less the
process umask: 0644 typically), not ``mkstemp``'s private 0600, so colleagues and a web
server can read a shared results directory. A failed write (a full disk, a read-only file
system, permissions) raises :class:`~llenergymeasure.exceptions.WriteError` naming the path
and the errno text; the target is untouched and no temporary file is left behind.
Readers name the file they could not read (:class:`~llenergymeasure.exceptions.ResultFileError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llenergymeasure.domain.files import validate_json_file
from llenergymeasure.exceptions import WriteError
from llenergymeasure.results.filenames import (
    LAUNCH_FILENAME,
    RAW_DIRNAME,
    RESULT_FILENAME,
    format_timestamp,
    process_index_of,
    process_marker_filename,
    process_result_filename,
    run_dir_name,
)

if TYPE_CHECKING:
    from llenergymeasure.domain.results import ExperimentResult, LaunchRecord, RawProcessResult

_MAX_SUFFIX = 10_000


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it is durable (no-op where unsupported)."""
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where possible (Linux: /proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly visible to other threads)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + dir fsync).

    The file gets mode ``0o666 & ~umask``; an OSError becomes WriteError naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from e
        raise
    with contextlib.suppress(OSError):  # the rename happened: durability is best effort now
        _fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def new_run_dir(results_dir: Path, name: str, timestamp: datetime | None = None) -> Path:
    """Create and return ``<results_dir>/<name>_<YYYYmmdd-HHMMSS>/``, never reusing one.

    ``os.mkdir`` is exclusive, so two processes racing for the same name both succeed with
    different directories: on a clash ``-2``, ``-3``, … is appended.
    """
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(results_dir, e) from e
    base = run_dir_name(name, timestamp)
    for attempt in range(1, _MAX_SUFFIX):
        candidate = results_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        except OSError as e:
            raise WriteError(candidate, e) from e
        return candidate
    raise FileExistsError(f"could not create a new run directory for {base!r} in {results_dir}")


def write_result(result: ExperimentResult, run_dir: Path, filename: str = RESULT_FILENAME) -> Path:
    """Write ``result`` as JSON into ``run_dir`` atomically; refuses to overwrite a result."""
    target = Path(run_dir) / filename
    if target.exists():
        raise FileExistsError(
            f"{target} already exists: results are never overwritten (use a new run directory)"
        )
    return atomic_write_text(target, result.model_dump_json(indent=2) + "\n")


def read_result(path: Path) -> ExperimentResult:
    """Read an ExperimentResult from a ``result.json`` file or a run directory holding one.

    A stored ``run_dir`` is updated to the directory the file was read from. A file that
    is not a valid result (truncated, not JSON, another schema) raises ResultFileError
    naming it; a missing file raises FileNotFoundError.
    """
    from llenergymeasure.domain.results import ExperimentResult

    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILENAME
    result = validate_json_file(ExperimentResult, path, "result")
    if result.run_dir is not None and Path(result.run_dir) != path.parent:
        # the run directory was moved or copied since it was written: say where it is now
        result = result.model_copy(update={"run_dir": str(path.parent)})
    return result


def find_result_files(root: Path) -> list[Path]:
    """Every ``result.json`` under ``root`` (recursively), sorted by path."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob(RESULT_FILENAME))


def raw_dir(run_dir: Path) -> Path:
    """``<run_dir>/raw``: where a launched run's per-process results live."""
    return Path(run_dir) / RAW_DIRNAME


def write_process_result(raw: RawProcessResult, run_dir: Path) -> Path:
    """Write one process's raw result as ``raw/process_<i>.json``, then its completion
    marker ``raw/process_<i>.done`` (both atomic; never overwritten).

    The marker holds the JSON's sha256, so a reader can tell a complete raw result from one
    a crash left half-done (no marker) or one replaced since (checksum differs).
    """
    directory = raw_dir(run_dir)
    target = directory / process_result_filename(raw.process_index)
    marker = directory / process_marker_filename(raw.process_index)
    if target.exists() or marker.exists():
        raise FileExistsError(f"{target} already exists: process {raw.process_index} wrote twice")
    data = (raw.model_dump_json(indent=2) + "\n").encode("utf-8")
    atomic_write_bytes(target, data)
    stamp = {"file": target.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    atomic_write_text(marker, json.dumps(stamp) + "\n")
    return target


def write_launch_record(record: LaunchRecord, run_dir: Path) -> Path:
    """Write the launching process's record as ``raw/launch.json`` (atomic, once)."""
    target = raw_dir(run_dir) / LAUNCH_FILENAME
    if target.exists():
        raise FileExistsError(f"{target} already exists: the run was launched twice")
    return atomic_write_text(target, record.model_dump_json(indent=2) + "\n")


@dataclass
class RawRun:
    """What ``raw/`` of a run directory holds: complete raw results (marker present and
    matching), the reason each other process file is unusable, and the launch record."""

    raws: list[RawProcessResult]
    unusable: dict[int, str] = field(default_factory=dict)
    launch: LaunchRecord | None = None


def read_raw_run(run_dir: Path) -> RawRun:
    """Read ``<run_dir>/raw/``: raw results ordered by process index (see :class:`RawRun`).

    Raises FileNotFoundError when the run has no ``raw/`` directory.
    """
    from llenergymeasure.domain.results import LaunchRecord, RawProcessResult

    directory = raw_dir(run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no raw/ directory (not a launched run)")
    indices = sorted(
        {i for p in directory.iterdir() if (i := process_index_of(p.name)) is not None}
    )
    raws: list[RawProcessResult] = []
    unusable: dict[int, str] = {}
    for index in indices:
        data, why = _complete_bytes(directory, index)
        if data is None:
            unusable[index] = why
            continue
        try:
            raws.append(RawProcessResult.model_validate_json(data))
        except ValueError as e:
            unusable[index] = f"{process_result_filename(index)} is not a valid raw result: {e}"
    launch_path = directory / LAUNCH_FILENAME
    launch = (
        LaunchRecord.model_validate_json(launch_path.read_bytes()) if launch_path.exists() else None
    )
    return RawRun(sorted(raws, key=lambda r: r.process_index), unusable, launch)


def _complete_bytes(directory: Path, index: int) -> tuple[bytes | None, str]:
    """The raw JSON of process ``index`` if its marker vouches for it, else (None, why)."""
    target = directory / process_result_filename(index)
    marker = directory / process_marker_filename(index)
    if not target.exists():
        return None, f"{marker.name} without {target.name}"
    if not marker.exists():
        return None, f"{target.name} has no completion marker (the process stopped while writing)"
    data = target.read_bytes()
    try:
        expected = json.loads(marker.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{marker.name} is unreadable"
    if hashlib.sha256(data).hexdigest() != expected:
        return None, f"{target.name} does not match its completion marker"
    return data, ""


def read_process_results(run_dir: Path) -> list[RawProcessResult]:
    """Every complete ``raw/process_<i>.json`` of ``run_dir``, ordered by process index."""
    return read_raw_run(run_dir).raws


def replace_result(result: ExperimentResult, run_dir: Path) -> tuple[Path, Path | None]:
    """Write ``result.json`` for a re-aggregation; an existing, different one is kept as
    ``result.replaced-<UTC timestamp>.json`` (nothing is lost). Returns (path, kept copy)."""
    target = Path(run_dir) / RESULT_FILENAME
    text = result.model_dump_json(indent=2) + "\n"
    kept = None
    if target.exists():
        old = target.read_bytes()
        if old == text.encode("utf-8"):
            return target, None
        kept = target.with_name(f"result.replaced-{format_timestamp()}.json")
        for attempt in range(2, _MAX_SUFFIX):
            if not kept.exists():
                break
            kept = target.with_name(f"result.replaced-{format_timestamp()}-{attempt}.json")
        atomic_write_bytes(kept, old)
    atomic_write_text(target, text)
    return target, kept
