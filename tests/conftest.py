"""Shared test configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fake_docker import FakeDocker, install

# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep user config and caches of the developer's machine out of tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for key in [k for k in os.environ if k.startswith("LLEM_")]:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the package logger; give the next test (caplog) its default back."""
    yield
    from llenergymeasure.logging import reset_logging

    reset_logging()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models are op-overhead bound: one intra-op thread is faster and steadier.

    Request it per module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``) so
    that torch is imported only by the tests that run a model.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    """tests/fakes/docker first on PATH: ``docker run`` runs the container entry point as a
    local process; see that script for what else it emulates."""
    return install(tmp_path, monkeypatch)
