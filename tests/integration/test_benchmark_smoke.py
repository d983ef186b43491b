"""Benchmark scripts whose GPU runs are quoted in docs: their logic on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
H200_PHASES = ROOT / "benchmarks/results/h200-2026-12-02-s2/phases_diag/diag.json"


def test_first_call_profile_runs_each_variant_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "first_call.json"
    cmd = [sys.executable, "benchmarks/gpu_first_call.py", "--cpu-smoke", "--calls", "2",
           "--variants", "plain,probes,no_cudnn", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    variants = {v["variant"]: v for v in json.loads(out.read_text())["variants"]}
    assert set(variants) == {"plain", "probes", "no_cudnn"}
    for v in variants.values():
        assert "error" not in v, v.get("tb")
        assert len(v["calls_s"]) == 2 and all(c > 0 for c in v["calls_s"])
    assert set(variants["probes"]["probes_s"]) >= {"matmul", "forward_1x8", "generate_2tok"}


def test_stored_h200_phase_windows_reattribute_to_the_quoted_figures(tmp_path: Path) -> None:
    """The H200 traces kept in benchmarks/results, attributed by this tree: the residuals
    and J/token its README and docs/measurement.md quote (a model change shows here)."""
    cmd = [sys.executable, "benchmarks/gpu_phase_energy.py", "--reanalyse", str(H200_PHASES),
           "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    windows = json.loads((tmp_path / "phase_energy.json").read_text())["windows"]
    residual = {k: w["phases"]["residual_pct"] for k, w in windows.items()}
    assert residual == pytest.approx(
        {"mixed": -0.113, "prefill_only": 0.119, "decode_heavy": -0.156}, abs=0.0015
    )
    jpt = {
        (k, p): windows[k]["phases"]["phases"][p]["j_per_token"]["value"] * 1e3
        for k, p in (("mixed", "prefill"), ("prefill_only", "prefill"),
                     ("mixed", "decode"), ("decode_heavy", "decode"))
    }  # fmt: skip
    assert jpt == pytest.approx(
        {("mixed", "prefill"): 3.886, ("prefill_only", "prefill"): 4.119,
         ("mixed", "decode"): 521.5, ("decode_heavy", "decode"): 441.8},
        rel=0.001,
    )  # fmt: skip


def test_stored_h200_alternated_rounds_reattribute_to_the_quoted_checks(tmp_path: Path) -> None:
    """The alternated-rounds run (h200-2026-12-02-s3/phases): its checks redone by this tree
    give the README's figures, pooled over the rounds."""
    run = ROOT / "benchmarks/results/h200-2026-12-02-s3/phases/phase_energy.json"
    cmd = [sys.executable, "benchmarks/gpu_phase_energy.py", "--reanalyse", str(run),
           "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads((tmp_path / "phase_energy.json").read_text())
    assert len(out["windows"]) == 7  # prefill_only + 3 rounds of mixed / decode_heavy
    assert all(abs(w["phases"]["residual_pct"]) < 1.0 for w in out["windows"].values())
    checks = {c["check"].split(" (")[0]: c for c in out["checks"]}
    decode = checks["decode J/token: mixed vs decode_heavy"]
    assert decode["ok"] and decode["value"].startswith("116.7 [112.9, 120.6] vs 125 [122.7, 127.2]")
    assert "0.900 (9.7 / 10.2 ms per step)" in decode["value"]
    prefill = checks["prefill J/token: mixed vs prefill_only"]
    assert prefill["ok"] and prefill["value"].startswith("3.606 [3.532, 3.681] vs 3.531")
