"""A real single-node Slurm for these tests: ``scripts/slurm/cluster.sh up`` once per session
(installs slurm-wlm, slurmdbd, munge and MariaDB with apt-get when missing), stopped at the
end unless it was already running before the session (or ``LLEM_SLURM_KEEP=1``).

Skipped, with the reason, only where Slurm cannot be installed here: not Linux, not root,
no apt-get/dpkg, or apt-get could not install the packages. A cluster whose packages are
installed but that does not come up is a test error (with cluster.sh's log lines).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "slurm" / "cluster.sh"
UP_TIMEOUT_S = 900  # a fresh machine: apt-get update + install (measured 11-38 s) + start


def _cannot_install() -> str | None:
    """Why Slurm cannot be installed on this machine (None: it can, or it is)."""
    if not sys.platform.startswith("linux"):
        return f"the Slurm test cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the Slurm test cluster is installed and run as root (scripts/slurm/cluster.sh)"
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        return "the Slurm test cluster is installed with apt-get (Debian/Ubuntu only)"
    if shutil.which("bash") is None:
        return "scripts/slurm/cluster.sh needs bash"
    return None


def _cluster(command: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLEM_SLURM_GPUS": "2"}
    return subprocess.run(
        ["bash", str(CLUSTER), command],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """The cluster, up (2 fake GPUs, 2 CPUs), for the whole session."""
    reason = _cannot_install()
    if reason is not None:
        pytest.skip(reason)
    was_up = _cluster("status", 60).returncode == 0
    up = _cluster("up", UP_TIMEOUT_S)
    if up.returncode != 0:
        text = up.stdout[-3000:] + up.stderr[-3000:]
        if "apt-get install" in text and "failed" in text:
            pytest.skip(f"Slurm could not be installed here (apt-get failed):\n{text}")
        pytest.fail(f"scripts/slurm/cluster.sh up failed:\n{text}", pytrace=False)
    try:
        yield
    finally:
        if not was_up and os.environ.get("LLEM_SLURM_KEEP") != "1":
            _cluster("stop", 120)
