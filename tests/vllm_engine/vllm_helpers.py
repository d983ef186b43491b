"""Helpers of the vLLM integration tests."""

from __future__ import annotations


def engine_processes() -> list[str]:
    """vLLM processes still alive below this one (EngineCore, workers), by name."""
    import psutil

    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                child.cmdline()
            ):
                alive.append(child.name())
        except psutil.NoSuchProcess:
            continue
    return alive
