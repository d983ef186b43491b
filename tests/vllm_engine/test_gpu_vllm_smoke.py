"""benchmarks/gpu_vllm.py --cpu-smoke: the GPU acceptance script's logic on the real CPU
engine (its numbers mean nothing here; its code paths are the GPU run's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_helpers import engine_processes

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/ci_vllm.sh builds a venv)")

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_vllm_benchmark_runs_every_arm_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    cmd = [
        sys.executable,
        "benchmarks/gpu_vllm.py",
        "--cpu-smoke",
        "--reps",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=480)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: targets
    data = json.loads(out.read_text())
    assert data["errors"] == [], data["errors"]
    s = data["summary"]
    assert s["n_reps"] == 2 and s["latency_present"] is True
    assert s["itl_sum_check_max_s"] < 1e-9
    for arm in ("tool", "generate", "steploop"):
        assert s[arm]["tok_s_median"] > 0 and s[arm]["errors"] == []
    assert len(s["tool_over_generate"]["ratios"]) == 2 and s["steploop_over_generate"]["median"]
    assert data["engine"]["vllm_version"] and data["engine"]["kv_cache_reserved_bytes"]
    assert s["generate_ttft_ms_mean_engine_median"] is not None
    assert "tool_over_generate" in proc.stdout and "TTFT" in proc.stdout  # the table
    assert engine_processes() == []
