"""llenergymeasure: measure what LLM inference costs (energy, latency, throughput, FLOPs, CO2).

Public API (SemVer-stable)::

    from llenergymeasure import run_experiment, run_study
    result = run_experiment(model="tiny-llama", n=20)

Imports are lazy: ``import llenergymeasure`` loads neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llenergymeasure._version import __version__

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "StudyConfig",
    "StudyResult",
    "__version__",
    "run_experiment",
    "run_study",
]

_LAZY = {
    "run_experiment": "llenergymeasure._api",
    "run_study": "llenergymeasure._api",
    "ExperimentConfig": "llenergymeasure.config.models",
    "StudyConfig": "llenergymeasure.config.models",
    "ExperimentResult": "llenergymeasure.domain.results",
    "StudyResult": "llenergymeasure.domain.study",
}

if TYPE_CHECKING:  # pragma: no cover
    from llenergymeasure._api import run_experiment, run_study
    from llenergymeasure.config.models import ExperimentConfig, StudyConfig
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.domain.study import StudyResult


def __getattr__(name: str) -> Any:
    """Import public names on first use (keeps `import llenergymeasure` light)."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'llenergymeasure' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
