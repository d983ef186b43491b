"""Shared pieces of the study integration tests: tiny CPU studies and manifest reading."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import llenergymeasure
from llenergymeasure.config.models import StudyConfig

#: Smallest real experiment: random-weight tiny Llama on CPU, 2 prompts, a few tokens,
#: no warm-up, no idle baseline, no telemetry sampler.
TINY_BASE: dict[str, Any] = {
    "model": "tiny-llama",
    "device": "cpu",
    "precision": "fp32",
    "n": 2,
    "max_input_tokens": 16,
    "max_output_tokens": 3,
    "warmup": {"n_warmup": 0},
    "baseline": {"enabled": False},
    "telemetry": {"enabled": False},
}


def tiny_study(name: str, sweep: dict[str, list[Any]], **execution: Any) -> StudyConfig:
    """A study over ``sweep`` on the tiny CPU base, gaps 0 unless given."""
    return StudyConfig(
        study_name=name, base=dict(TINY_BASE), sweep=sweep, execution=dict(execution)
    )


def only_study_dir(results_dir: Path) -> Path:
    """The single study directory under ``results_dir``."""
    dirs = [p.parent for p in results_dir.glob("*/study_manifest.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_manifest_json(study_dir: Path) -> dict[str, Any]:
    """The manifest as plain JSON."""
    return json.loads((study_dir / "study_manifest.json").read_text())


def subprocess_env() -> dict[str, str]:
    """Environment for a ``python -c`` child that must import this checkout's package."""
    src = str(Path(llenergymeasure.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env
