"""The ``fake_docker`` fixture's helper: puts tests/fakes/docker first on PATH and reads
what it logged (see that script's docstring for what it emulates)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import llenergymeasure

FAKES = Path(__file__).resolve().parent
SCRIPT = FAKES / "docker"
VLLM_IMAGE_PATH = FAKES / "vllm_image"
PYTORCH_IMAGE = "llem-fake/pytorch:test"
VLLM_IMAGE = "llem-fake/vllm:test"
HANG_IMAGE = "llem-fake/hang:test"
CRASH_IMAGE = "llem-fake/crash:test"
IMAGES = (PYTORCH_IMAGE, VLLM_IMAGE, HANG_IMAGE, CRASH_IMAGE)


@dataclass
class FakeDocker:
    """Where the fake docker logs and keeps its containers."""

    bin_dir: Path
    log: Path
    state: Path
    monkeypatch: pytest.MonkeyPatch

    def records(self) -> list[dict[str, Any]]:
        """Every invocation, in order."""
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def calls(self) -> list[list[str]]:
        """Every invocation's argv (``["docker", ...]``)."""
        return [r["argv"] for r in self.records() if "argv" in r]

    def started(self) -> dict[str, int]:
        """Container name -> pid of the process that played it."""
        return {r["started"]: r["pid"] for r in self.records() if "started" in r}

    def runs(self) -> list[list[str]]:
        """The ``docker run`` command lines."""
        return [argv for argv in self.calls() if argv[1:2] == ["run"]]

    def containers(self) -> list[str]:
        """Containers that still exist."""
        return sorted(p.stem for p in self.state.glob("*.json"))

    def set_images(self, *images: str) -> None:
        """The images that are present."""
        self.monkeypatch.setenv("FAKE_DOCKER_IMAGES", ",".join(images))

    def set_runtimes(self, *runtimes: str) -> None:
        """The runtimes ``docker info`` lists."""
        self.monkeypatch.setenv("FAKE_DOCKER_RUNTIMES", ",".join(runtimes))

    def daemon_down(self) -> None:
        """Every call fails as with no daemon."""
        self.monkeypatch.setenv("FAKE_DOCKER_DAEMON", "down")


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    """Copy the fake onto a fresh bin directory first on PATH and configure it."""
    bin_dir = tmp_path / "fake-docker-bin"
    bin_dir.mkdir()
    target = bin_dir / "docker"
    shutil.copyfile(SCRIPT, target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    src = Path(llenergymeasure.__file__).resolve().parent.parent
    fake = FakeDocker(
        bin_dir=bin_dir,
        log=tmp_path / "fake-docker-log.jsonl",
        state=tmp_path / "fake-docker-state",
        monkeypatch=monkeypatch,
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(fake.state))
    monkeypatch.setenv("FAKE_DOCKER_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_DOCKER_PYTHONPATH", str(src))
    monkeypatch.setenv("FAKE_DOCKER_VLLM_PATH", str(VLLM_IMAGE_PATH))
    monkeypatch.delenv("FAKE_DOCKER_DAEMON", raising=False)
    fake.set_images(*IMAGES)
    fake.set_runtimes("runc")
    return fake
