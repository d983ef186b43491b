"""Pool the paired ratios of several runs of the same GPU benchmark (no GPU needed).

On the GPU VM consecutive ~1 s runs of CPU-bound decoding differ by 8-20% (the host's CPU
speed), so one run's median of 12-15 pairs has a standard error of 3-5%. The pairs of repeated
runs of the same, unchanged procedure can be pooled: this prints, per setting, every run's
median and the pooled median of all pairs with its bootstrap 95% CI.

    python benchmarks/pool_runs.py overhead RUN.json [RUN.json ...]   # gpu_energy.py output
    python benchmarks/pool_runs.py harness RUN.json [RUN.json ...]    # gpu_experiment_harness.py
    python benchmarks/pool_runs.py launcher RUN.json [RUN.json ...]   # gpu_launcher_tax.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench_stats import median_ci


def overhead_ratios(data: dict[str, Any]) -> dict[str, list[float]]:
    """Setting -> on/off pair ratios of one gpu_energy.py JSON (section 2)."""
    section = data.get("overhead") or {}
    return {
        name: [p["ratio"] for p in r["pairs"]]
        for name, r in section.items()
        if name != "cpu_settings"
    }


def harness_ratios(data: dict[str, Any]) -> dict[str, list[float]]:
    """Setting -> tool/reference ratios of one gpu_experiment_harness.py JSON."""
    return {f"{s['mode']}_b{s['batch_size']}": list(s["ratios"]) for s in data["settings"]}


def launcher_ratios(data: dict[str, Any]) -> dict[str, list[float]]:
    """Figure -> launcher/direct pair ratios of one gpu_launcher_tax.py JSON."""
    summary = data.get("summary") or {}
    return {
        name: list(summary[name]["ratios"])
        for name in ("throughput", "j_per_token")
        if summary.get(name)
    }


READERS = {"overhead": overhead_ratios, "harness": harness_ratios, "launcher": launcher_ratios}


def pool(kind: str, paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Per setting: each run's median and the pooled median with its CI."""
    read = READERS[kind]
    runs: dict[str, list[list[float]]] = {}
    for path in paths:
        for name, ratios in read(json.loads(path.read_text())).items():
            runs.setdefault(name, []).append(ratios)
    out = {}
    for name, per_run in runs.items():
        pooled = [x for run in per_run for x in run]
        out[name] = {
            "run_medians": [statistics.median(r) for r in per_run],
            "n_pairs": len(pooled),
            "pooled_median": statistics.median(pooled),
            "pooled_ci95": median_ci(pooled),
        }
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in READERS:
        print(__doc__)
        return 2
    target = 0.99 if argv[0] == "overhead" else 0.98
    result = pool(argv[0], [Path(p) for p in argv[1:]])
    print(
        f"{'setting':12} {'run medians':32} {'pairs':>5} {'pooled':>7} {'95% CI':>16}  >= {target}"
    )
    for name, r in result.items():
        meds = " ".join(f"{m:.3f}" for m in r["run_medians"])
        lo, hi = r["pooled_ci95"]
        ok = "yes" if r["pooled_median"] >= target else "NO"
        print(
            f"{name:12} {meds:32} {r['n_pairs']:>5} {r['pooled_median']:7.4f} "
            f"[{lo:.4f},{hi:.4f}]  {ok}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
