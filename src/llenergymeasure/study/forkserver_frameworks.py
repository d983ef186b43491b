"""Imported by a study's fork server only, after :mod:`llenergymeasure.study.forkserver_init`,
when the study runs real experiments: torch and transformers, once for all of its children
(:func:`llenergymeasure.core.backends.registry.preload_frameworks`; whatever is not installed
is skipped, and the child's backend reports it)."""

from __future__ import annotations

from llenergymeasure.core.backends.registry import preload_frameworks

preload_frameworks()
