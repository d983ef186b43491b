"""Prefill vs decode energy of a result, where the result has a phase attribution.

The phase-energy model (``energy.phases``) is being added separately; this is the one place
that reads it, and it tolerates its absence and the shapes it may take: a mapping
``phase -> J`` or ``phase -> {energy_j, method, ...}`` / an object with ``energy_j``, or a
list of such objects/dicts naming their ``phase`` (or ``name``). Everything else shows
:data:`NOT_MEASURED`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llenergymeasure.domain.results import ExperimentResult

NOT_MEASURED = "not measured: this result has no phase attribution"


@dataclass(frozen=True)
class PhaseEnergy:
    """Energy attributed to one phase of the window (e.g. prefill, decode)."""

    phase: str
    energy_j: float
    method: str | None = None


def phase_energy(result: ExperimentResult) -> list[PhaseEnergy] | None:
    """The result's energy per phase, or None when it has no phase attribution."""
    raw = getattr(result.energy, "phases", None) if result.energy is not None else None
    if raw is None:
        raw = getattr(result, "phases", None)
    if not raw:
        return None
    items: list[tuple[str, Any]]
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, (list, tuple)):
        items = [
            (str(_get(v, "phase") or _get(v, "name") or f"phase {i}"), v) for i, v in enumerate(raw)
        ]
    else:
        return None
    phases = [p for name, value in items if (p := _phase(name, value)) is not None]
    return phases or None


def _phase(name: str, value: Any) -> PhaseEnergy | None:
    """One phase from a number or an object/dict carrying ``energy_j``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return PhaseEnergy(name, float(value))
    energy = _get(value, "energy_j")
    if not isinstance(energy, (int, float)) or isinstance(energy, bool):
        return None
    method = _get(value, "method")
    return PhaseEnergy(name, float(energy), str(method) if method is not None else None)


def _get(value: Any, key: str) -> Any:
    """``value[key]`` for a mapping, ``value.key`` otherwise (None when absent)."""
    if isinstance(value, Mapping):
        return value.get(key)
    return getattr(value, key, None)
