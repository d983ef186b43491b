"""llenergymeasure: measure what LLM inference costs (energy, latency, throughput, FLOPs, CO2).

Public API (SemVer-stable)::

    from llenergymeasure import run_experiment, run_study, load_results, report
    result = run_experiment(model="tiny-llama", n=20)
    df = load_results("results/")          # pandas.DataFrame, one row per experiment
    report("results/")                     # results/report.html, self-contained

Imports are lazy: ``import llenergymeasure`` loads neither torch nor transformers, nor
pandas or plotly (the ``report`` extra, needed only by ``load_results`` and ``report``).
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
    "load_results",
    "report",
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
    "load_results": "llenergymeasure.reporting.frame",
    "report": "llenergymeasure.reporting.html",
}

if TYPE_CHECKING:  # pragma: no cover
    from llenergymeasure._api import run_experiment, run_study
    from llenergymeasure.config.models import ExperimentConfig, StudyConfig
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.domain.study import StudyResult
    from llenergymeasure.reporting.frame import load_results
    from llenergymeasure.reporting.html import report


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
