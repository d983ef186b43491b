"""Stable hashes of configurations: the identity used for resume, dedup and comparison.

``config_hash`` covers the explicit choices of an experiment (``exclude_none``: a backend
field left at ``None`` = "the backend's default" does not count) and leaves out what does not
change the measurement: its ``name``, ``output_dir``, and the CO2 accounting inputs
(``carbon_intensity_gco2_kwh``, ``datacenter_pue``), which are applied after measuring.
``study_design_hash`` covers what defines a study's design (base, sweep, experiments, cycles,
order, shuffle seed) but not gaps, timeouts or names.

Usage::

    config_hash(cfg)            # 64 hex characters
    study_design_hash(study)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, StudyConfig

#: Fields that do not change what is measured.
HASH_EXCLUDED_FIELDS = frozenset(
    {"name", "output_dir", "carbon_intensity_gco2_kwh", "datacenter_pue"}
)


def canonical_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def sha256_of(data: Any) -> str:
    """SHA-256 hex digest of ``data``'s canonical JSON."""
    return hashlib.sha256(canonical_json(data).encode("ascii")).hexdigest()


def config_hash(cfg: ExperimentConfig) -> str:
    """SHA-256 of the experiment's measured configuration (see module docstring)."""
    dumped = cfg.model_dump(mode="json", exclude_none=True, exclude=set(HASH_EXCLUDED_FIELDS))
    return sha256_of(dumped)


def short_hash(full_hash: str, length: int = 8) -> str:
    """A short prefix of a hash for labels and file names."""
    return full_hash[:length]


def study_design_hash(study: StudyConfig) -> str:
    """SHA-256 of what defines a study's design; gaps, timeouts and names do not count."""
    design = {
        "base": study.base,
        "sweep": study.sweep,  # key order matters: it defines the expansion order
        "sweep_order": list(study.sweep),
        "experiments": study.experiments,
        "n_cycles": study.execution.n_cycles,
        "order": study.execution.order,
        "shuffle_seed": study.execution.shuffle_seed,
    }
    return sha256_of(design)
