"""A two-configuration study on the real vLLM engine: each experiment in its own process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from vllm_helpers import engine_processes

from llenergymeasure import run_study
from llenergymeasure.config.models import StudyConfig

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/ci_vllm.sh builds a venv)")


def test_two_config_study(tmp_path: Path, tiny_vllm: dict[str, Any]) -> None:
    base = {k: v for k, v in tiny_vllm.items() if k != "vllm"}
    base |= {"n": 12, "max_output_tokens": 8, "vllm": {"enforce_eager": True}}
    study = StudyConfig(
        study_name="vllm-two",
        base=base,
        sweep={"vllm.max_num_seqs": [4, 12]},
        execution={"n_cycles": 1},
    )
    result = run_study(study, results_dir=tmp_path, no_gaps=True)
    assert not result.failures, result.failures
    assert len(result.configs) == 2
    for config in result.configs:
        ttft = config.metrics["ttft_ms_mean"].stats
        assert ttft is not None and ttft.mean > 0
    assert engine_processes() == []
