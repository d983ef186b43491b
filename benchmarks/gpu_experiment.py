"""End-to-end GPU experiment through the public library API (what ``llem run`` does).

For the random-weight ``llama-3.2-1b`` catalogue shape in bf16, greedy, fixed lengths
(synthetic dataset, 64 input / 64 output tokens by default) it runs one experiment per
(cache mode, batch size): eager (dynamic cache) and static cache (transformers' own
compiled decode path), batch 1 / 8 / 64. Each experiment is a full ``run_experiment``:
pre-flight, model load, tokenisation and warm-up outside the window, idle baseline (cached
after the first run), then the synchronised window with the NVML energy counter read at
its edges. ``n`` per setting is chosen so that each window lasts about 8-12 s on an H100
(from the throughputs in benchmarks/results/h100-2026-11-23/README.md); ``--quick`` uses batch 1 and 64 and ~3 s windows.

Prints a table (mode, batch, n, tok/s, mJ/output token, mean W (GPU energy / window), TTFT ms, ITL ms, energy
method, window s, counter-vs-polled %) and writes every row plus the result paths as JSON.

    python benchmarks/gpu_experiment.py --out gpu_experiment.json
    python benchmarks/gpu_experiment.py --quick --out quick.json
    python benchmarks/gpu_experiment.py --device cpu --model tiny-llama --precision fp32 --quick  # smoke

Run from the repository root (``src`` is put on ``sys.path`` if the package is not installed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

try:
    import llenergymeasure  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llenergymeasure import run_experiment
from llenergymeasure.domain.results import ExperimentResult

#: Requests per (mode, batch) for ~8-12 s windows at 64/64 tokens on an H100 (benchmarks/results/h100-2026-11-23:
#: eager b1 ~49 tok/s, static b1 ~325, eager b64 ~2600, static b64 ~10300 at 128/128).
FULL_N = {
    ("eager", 1): 8,
    ("eager", 8): 64,
    ("eager", 64): 384,
    ("static", 1): 48,
    ("static", 8): 256,
    ("static", 64): 1536,
}
QUICK_N = {("eager", 1): 3, ("eager", 64): 128, ("static", 1): 16, ("static", 64): 512}
COLUMNS = (
    "mode", "batch", "n", "tok/s", "mJ/out tok", "mean W", "TTFT ms", "ITL ms",
    "energy method", "window s", "polled vs counter %",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="llama-3.2-1b", help="catalogue name (random weights)")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="batch 1 and 64, ~3 s windows")
    p.add_argument("--n-scale", type=float, default=1.0, help="multiply every n (timing tuning)")
    p.add_argument("--modes", default="eager,static")
    p.add_argument("--batches", default=None, help="comma list, default 1,8,64 (quick: 1,64)")
    p.add_argument("--baseline-s", type=float, default=5.0, help="idle baseline duration")
    p.add_argument("--results-dir", type=Path, default=Path("results/gpu_experiment"))
    p.add_argument("--out", type=Path, default=None, help="JSON with every row")
    return p.parse_args(argv)


def n_for(mode: str, batch: int, quick: bool, scale: float) -> int:
    """Requests for one setting: a multiple of the batch size (all batches full)."""
    table = QUICK_N if quick else FULL_N
    base = table.get((mode, batch), 8 * batch)
    return max(batch, round(base * scale / batch) * batch)


def overrides_for(args: argparse.Namespace, mode: str, batch: int, n: int) -> dict[str, Any]:
    """run_experiment keywords for one setting."""
    pytorch: dict[str, Any] = {"batch_size": batch}
    if mode == "static":
        pytorch["cache_implementation"] = "static"
    return {
        "name": f"{args.model}_{mode}_b{batch}",
        "model": args.model,
        "weights": "random",
        "backend": "pytorch",
        "precision": args.precision,
        "device": args.device,
        "dataset": {"n": n, "input_len": args.input_len, "output_len": args.output_len},
        "n": n,
        "max_input_tokens": args.input_len,
        "max_output_tokens": args.output_len,
        "pytorch": pytorch,
        # static cache compiles during the first warm-up run: two more make it steady
        "warmup": {"n_warmup": 3 if mode == "static" else 2},
        "baseline": {"enabled": True, "duration_s": args.baseline_s},
    }


def row_for(mode: str, batch: int, n: int, result: ExperimentResult) -> dict[str, Any]:
    """One table row from a result (None where not measured)."""
    energy = result.energy
    methods = sorted({f"{m.scope}:{m.method}" for m in energy.measurements}) if energy else []
    mj = result.j_per_output_token
    return {
        "mode": mode,
        "batch": batch,
        "n": n,
        "tok/s": result.output_tokens_per_s,
        "mJ/out tok": mj * 1000 if mj is not None else None,
        "mean W": result.mean_power_w,
        "TTFT ms": result.ttft_ms_mean,
        "ITL ms": result.itl_ms_mean,
        "energy method": ",".join(methods) or (result.energy_not_measured_reason or "none"),
        "window s": result.measurement_window_s,
        "polled vs counter %": energy.counter_vs_polled_pct if energy else None,
        "energy_j": result.energy_j,
        "energy_above_idle_j": energy.baseline.energy_above_idle_j
        if energy and energy.baseline
        else None,
        "idle_power_w": energy.baseline.idle_power_w if energy and energy.baseline else None,
        "setup_s": result.setup_s,
        "warmup_runs": result.warmup.runs if result.warmup else None,
        "warnings": [f"{w.code}: {w.message}" for w in result.warnings],
        "gpu": result.environment.gpus[0].name
        if result.environment and result.environment.gpus
        else None,
    }


def fmt(value: Any) -> str:
    """Compact cell text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    """Fixed-width table of the headline columns."""
    cells = [[fmt(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def reset_compiler() -> None:
    """Forget compiled graphs between settings: each experiment builds a new model object,
    and dynamo's per-function recompile limit would otherwise silently fall back to eager."""
    import torch

    torch._dynamo.reset()


def main(argv: list[str] | None = None) -> int:
    """Run every setting, print the table, write JSON."""
    args = parse_args(argv)
    batches = [int(b) for b in (args.batches or ("1,64" if args.quick else "1,8,64")).split(",")]
    rows: list[dict[str, Any]] = []
    for mode in args.modes.split(","):
        for batch in batches:
            n = n_for(mode, batch, args.quick, args.n_scale)
            t0 = time.perf_counter()
            print(f"[{mode} b{batch}] n={n} ...", file=sys.stderr, flush=True)
            try:
                result = run_experiment(
                    results_dir=args.results_dir, **overrides_for(args, mode, batch, n)
                )
                row = row_for(mode, batch, n, result)
            except Exception as e:  # one failing setting must not lose the others
                row = {"mode": mode, "batch": batch, "n": n, "error": repr(e),
                       "traceback": traceback.format_exc()}  # fmt: skip
            reset_compiler()
            row["wall_s"] = time.perf_counter() - t0
            print(f"[{mode} b{batch}] done in {row['wall_s']:.0f} s", file=sys.stderr, flush=True)
            rows.append(row)
    print_table(rows)
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
