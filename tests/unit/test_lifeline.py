"""Children die with their parent: real processes, real SIGKILL of the parent alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from llenergymeasure import lifeline

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux")

# A parent that starts one spawn child (plain, or the telemetry sampler), prints the
# child's pid, then waits forever: the test SIGKILLs the parent alone.
PARENT = """
import multiprocessing, sys, time
from llenergymeasure import lifeline

def child():
    lifeline.die_with_parent()
    time.sleep(600)

if __name__ == "__main__":
    if sys.argv[1] == "sampler":
        from llenergymeasure.core.energy.sampler import TelemetrySampler
        from llenergymeasure.testing import FakeNVML, fake_gpus
        from llenergymeasure.core.energy.sampler import NvmlSampleSource
        sampler = TelemetrySampler(NvmlSampleSource((0,), fake=FakeNVML(fake_gpus(1))), 0.5)
        sampler.start()
        pid = sampler._process.pid
    else:
        process = multiprocessing.get_context("spawn").Process(target=child, daemon=False)
        process.start()
        pid = process.pid
    print(pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["plain", "sampler"])
def test_child_dies_when_its_parent_is_sigkilled(kind: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, kind], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.ppid() == parent.pid
        parent.send_signal(signal.SIGKILL)  # the parent alone: its child is not signalled
        parent.wait(timeout=30)
        child.wait(timeout=30)  # raises TimeoutExpired if the orphan lived on
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_parent_checks() -> None:
    assert lifeline.parent_alive(os.getppid())
    assert not lifeline.parent_alive(os.getppid() + 10_000_000)
    assert lifeline.parent_alive(None) or lifeline.expected_parent_pid() is not None


def test_an_orphan_exits_at_its_first_check() -> None:
    # die_with_parent with a parent pid that is not ours: the race "parent died before prctl".
    code = (
        "import os; from llenergymeasure import lifeline; "
        "lifeline.die_with_parent(os.getppid() + 10_000_000); print('still here')"
    )
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == lifeline.ORPHAN_EXIT_CODE, done.stderr
    assert "still here" not in done.stdout
    assert time.monotonic() - t0 < 60
