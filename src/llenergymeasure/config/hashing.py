"""Stable hashes of configurations: the identity used for resume, dedup and comparison.

``config_hash`` covers the explicit choices of an experiment (``exclude_none``: a backend
field left at ``None`` = "the backend's default" does not count) and leaves out what does not
change the measurement: its ``name``, ``output_dir``, and the CO2 accounting inputs
(``carbon_intensity_gco2_kwh``, ``datacenter_pue``), which are applied after measuring.
Empty sections (``pytorch: {}``, or one whose fields are all ``None``) count as absent.
``study_design_hash`` fingerprints a study's design as written (base, sweep, experiments,
cycles, order, shuffle seed; not gaps, timeouts or names); ``run_order_hash`` identifies the
*expanded* design — the (config hash, cycle) of every planned experiment, in run order —
which is what a resume must match (``8.0`` for ``8`` or a default spelled out change the
first, not the second).

Usage::

    config_hash(cfg)            # 64 hex characters
    study_design_hash(study)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, StudyConfig
from llenergymeasure.redaction import redact

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
    return sha256_of(hashed_fields(cfg))


def hashed_fields(cfg: ExperimentConfig) -> dict[str, Any]:
    """The fields ``config_hash`` covers, as plain JSON data. Credential values are
    redacted (`llenergymeasure.redaction`): a token does not change what is measured, and
    the hash must be reproducible from a result's stored (redacted) config."""
    dumped = cfg.model_dump(mode="json", exclude_none=True, exclude=set(HASH_EXCLUDED_FIELDS))
    return _without_empty_sections(redact(dumped))


def _without_empty_sections(data: dict[str, Any]) -> dict[str, Any]:
    """Drop top-level mappings left empty by ``exclude_none`` (``pytorch: {}`` = absent)."""
    return {k: v for k, v in data.items() if not (isinstance(v, dict) and not v)}


def run_order_hash(pairs: Iterable[tuple[str, int]]) -> str:
    """SHA-256 of a study's run order: ``(config_hash, cycle)`` of each planned experiment."""
    return sha256_of([[h, c] for h, c in pairs])


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
