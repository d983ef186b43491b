"""Imported by a study's fork server only, after :mod:`llenergymeasure.study.forkserver_init`,
when the study runs real experiments: torch and transformers, once for all of its children
(:func:`llenergymeasure.core.backends.registry.preload_frameworks`; whatever is not installed
is skipped, and the child's backend reports it), then llem's own modules that an experiment
run imports (:data:`RUN_MODULES`), so that no child imports them again either.

None of these imports starts a thread or a process, or initialises CUDA or NVML: the server
forks every child from this state, and each child initialises its own.
"""

from __future__ import annotations

import importlib

from llenergymeasure.core.backends.registry import preload_frameworks

#: The modules a study child's experiment imports: the orchestrator, what its run imports
#: lazily on the way (environment, prompts, the pytorch backend, energy meters, phase
#: energy), and the few third-party modules the frameworks have not imported already. On
#: the H200 VM the orchestrator alone took 0.65-0.7 s per child to import (docs/studies.md,
#: "Where a study's time goes"). A module missing here only costs each child its import;
#: ``tests/integration/test_child_start.py`` checks that a CPU run imports none of llem's
#: modules beyond what this list brings in.
RUN_MODULES = (
    "llenergymeasure.study.worker",
    "llenergymeasure.orchestration.orchestrator",
    "llenergymeasure.orchestration.phase_energy",
    "llenergymeasure.config.user_config",
    "llenergymeasure.config._issues",  # the user config's validation
    "llenergymeasure.config.provenance",
    "llenergymeasure.core.environment",
    "llenergymeasure.core.backends.pytorch",
    "llenergymeasure.core.latency",
    "llenergymeasure.core.energy.session",
    "llenergymeasure.core.energy.selection",
    "llenergymeasure.catalogue.tokenizer",
    "llenergymeasure.datasets.loader",
    "llenergymeasure.datasets.synthetic",
    "llenergymeasure.core.models.loading",
    "llenergymeasure.core.energy.nvml",
    "pynvml",  # imported on the first NVML call (a GPU run); no NVML initialisation here
    "numpy",
    "platformdirs",
)


def preload_run_modules() -> None:
    """Import :data:`RUN_MODULES`; one that fails to import is left to the child (where it
    fails with its own message, in the experiment it belongs to)."""
    for name in RUN_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # e.g. an optional dependency missing: the child reports it
            continue


preload_frameworks()
preload_run_modules()
