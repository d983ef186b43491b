"""One runner per study directory: an OS advisory lock on ``<study_dir>/.study.lock``.

``fcntl.flock(LOCK_EX | LOCK_NB)`` on a lock file inside the study directory. The kernel
releases the lock when the holder's file descriptor closes — at exit, however the process
dies (SIGKILL included) — so a stale lock cannot outlive a dead study, and nothing has to
clean it up. The file itself stays (deleting it would let two processes lock two different
files of one name); it holds the holder's pid, host and start time as JSON, which a second
runner reads to say who holds the study (:class:`StudyLockedError`, CLI exit 2).

The descriptor is opened close-on-exec, so experiment children (``spawn``: fork + exec) and
containers do not inherit it: only the runner holds the study. On NFS, Linux maps ``flock``
onto NFS byte-range locks, which work across clients (NFSv4, or v3 with lockd).

Executors that run experiments elsewhere (a container, a batch scheduler) keep this rule:
the process that owns the manifest holds the lock for as long as it writes it.

Usage::

    with StudyLock.acquire(study_dir):
        ...   # read and write the manifest, run experiments
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from llenergymeasure.clock import utc_now
from llenergymeasure.exceptions import StudyLockedError

LOCK_FILENAME = ".study.lock"

try:  # POSIX; elsewhere the lock degrades to holder information only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class StudyLock:
    """A held lock on one study directory (see the module docstring)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, study_dir: Path) -> StudyLock:
        """Lock ``study_dir`` or raise StudyLockedError naming the holder (pid, host)."""
        path = Path(study_dir) / LOCK_FILENAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            from llenergymeasure.exceptions import WriteError

            raise WriteError(path, e) from e
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise StudyLockedError(Path(study_dir), read_holder(Path(study_dir))) from e
        lock = cls(path, fd)
        lock._write_holder()
        return lock

    def _write_holder(self) -> None:
        """Record who holds the lock (best effort: a full disk must not stop the study)."""
        assert self._fd is not None
        info = holder_info()
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(self._fd)

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Unlock and close (idempotent). The lock file stays."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def holder_info() -> dict[str, Any]:
    """What this process writes into the lock file."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now().isoformat()}


def read_holder(study_dir: Path) -> dict[str, Any]:
    """The holder recorded in a study's lock file ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(study_dir) / LOCK_FILENAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
