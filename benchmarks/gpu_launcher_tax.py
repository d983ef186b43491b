"""Launcher tax: ``pytorch.num_processes: 1`` through the launcher vs the direct path.

Both arms run the same experiment through the public ``run_experiment``: a random-weight
Llama-3.2-1B shape in bf16, greedy, synthetic 64 in / 64 out tokens, batch 64, static
cache (transformers' compiled decode: GPU-bound and steady; ``--cache eager`` is CPU-bound
and swings 10-20 % between seconds on a GPU VM), NVML meter and telemetry sampler on, no
idle baseline. The *direct* arm runs the model in the experiment's process; the
*launcher* arm sets ``pytorch.num_processes: 1``, so the experiment's process spawns one
worker that runs the model while the parent holds the energy session (and releases the
worker through the gloo start barrier). Each arm runs in a fresh ``spawn`` child, as a
study runs its experiments, so neither inherits the other's CUDA context or compiled
graphs (the on-disk inductor cache is shared, and compilation happens in warm-up, outside
the window). Arms alternate in pairs, order flipped every pair (D L, L D, ...) against
drift; each pair gives launcher / direct output tokens/s of the window, and the median of
the pair ratios is reported with a percentile-bootstrap 95 % CI (bench_stats.median_ci).
Target: median >= 0.98 (the launcher adds no tax). J/output token is compared the same way.

    PYTHONPATH=src python benchmarks/gpu_launcher_tax.py --out launcher_tax.json          # ~5 min (est.), H200
    PYTHONPATH=src python benchmarks/gpu_launcher_tax.py --quick --out launcher_tax.json  # ~2.5 min (est.)
    PYTHONPATH=src python benchmarks/gpu_launcher_tax.py --cpu-smoke --out smoke.json     # CPU, tiny-llama

Full: 6 pairs of n = 768 requests (12 full batches, a ~4 s window at the ~12k tok/s expected
on an H200), no new pair once the next would overrun ``--budget-s`` (330 s; fewer than 5
complete pairs is reported, and runs can be pooled with ``pool_runs.py launcher``);
quick: 3 pairs of 384. An arm costs its process start, imports, model build and compile
warm-up (~20-35 s, estimated: not yet run on an H200) besides its window; the launcher arm
starts one more process. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_stats (a sibling)
try:
    import llenergymeasure  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_stats import median_ci  # type: ignore[import-not-found]

TARGET_RATIO = 0.98
ARM_TIMEOUT_S = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON with every arm and the ratios")
    p.add_argument("--quick", action="store_true", help="3 pairs, ~2 s windows")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny-llama on the CPU, 2 pairs")
    p.add_argument("--pairs", type=int, default=None, help="pairs to run (default 6, quick 3)")
    p.add_argument("--min-pairs", type=int, default=5, help="fewer complete pairs: say so")
    p.add_argument("--budget-s", type=float, default=330.0, help="stop starting pairs after")
    p.add_argument("--model", default="llama-3.2-1b")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=None, help="requests per arm (default 768, quick 384)")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--cache", choices=["static", "eager"], default="static")
    p.add_argument("--results-dir", type=Path, default=Path("results/gpu_launcher_tax"))
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.model, args.precision, args.batch, args.cache = "tiny-llama", "fp32", 4, "eager"
        args.input_len, args.output_len = 16, 8
        args.n = args.n or 32
        args.pairs = args.pairs or 2
        args.min_pairs = min(args.min_pairs, args.pairs)
    args.pairs = args.pairs or (3 if args.quick else 6)
    args.n = args.n or (384 if args.quick else 768)
    if args.quick:
        args.min_pairs = min(args.min_pairs, args.pairs)
    return args


def overrides(args: argparse.Namespace, arm: str) -> dict[str, Any]:
    """run_experiment keywords of one arm (identical but for pytorch.num_processes)."""
    pytorch: dict[str, Any] = {"batch_size": args.batch}
    if args.cache == "static":
        pytorch["cache_implementation"] = "static"
    if arm == "launcher":
        pytorch["num_processes"] = 1
    return {
        "name": f"launcher-tax_{arm}",
        "model": args.model,
        "weights": "random",
        "backend": "pytorch",
        "precision": args.precision,
        "device": "cpu" if args.cpu_smoke else "cuda",
        "dataset": {"n": args.n, "input_len": args.input_len, "output_len": args.output_len},
        "n": args.n,
        "max_input_tokens": args.input_len,
        "max_output_tokens": args.output_len,
        "pytorch": pytorch,
        # static cache compiles in the first warm-up run: two more make it steady
        "warmup": {"n_warmup": 3 if args.cache == "static" else 2},
        "baseline": {"enabled": False},
        "telemetry": {"enabled": True, "save_timeseries": False},
    }


def run_arm(arm: str, keywords: dict[str, Any], results_dir: str, conn: Connection) -> None:
    """Child: one experiment; sends its figures (or the error) to the parent."""
    t0 = time.perf_counter()
    try:
        from llenergymeasure import run_experiment

        result = run_experiment(results_dir=results_dir, **keywords)
        energy = result.energy
        conn.send(
            {
                "arm": arm,
                "tok_s": result.output_tokens_per_s,
                "window_s": result.measurement_window_s,
                "j_per_output_token": result.j_per_output_token,
                "energy_j": result.energy_j,
                "energy_window_s": energy.duration_s if energy else None,
                "setup_s": result.setup_s,
                "wall_s": time.perf_counter() - t0,
                "n_processes": result.n_processes,
                "partial": result.partial,
                "warnings": [f"{w.code}: {w.message}" for w in result.warnings],
                "run_dir": result.run_dir,
                "gpu": result.environment.gpus[0].name
                if result.environment and result.environment.gpus
                else None,
            }
        )
    except Exception as e:  # the parent records it and goes on
        conn.send({"arm": arm, "error": repr(e), "traceback": traceback.format_exc()})
    finally:
        conn.close()


def one_arm(args: argparse.Namespace, arm: str) -> dict[str, Any]:
    """Run one arm in a fresh spawn child and wait for it (blocking, with a timeout)."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=run_arm, args=(arm, overrides(args, arm), str(args.results_dir), sender)
    )
    t0 = time.perf_counter()
    child.start()
    sender.close()
    row: dict[str, Any]
    try:
        if receiver.poll(ARM_TIMEOUT_S):
            row = receiver.recv()
        else:
            row = {"arm": arm, "error": f"no answer within {ARM_TIMEOUT_S:.0f} s"}
    except EOFError:
        row = {"arm": arm, "error": "the arm's process died without reporting"}
    finally:
        child.join(60)
        if child.is_alive():
            child.kill()
            child.join()
    row["process_wall_s"] = time.perf_counter() - t0
    return row


def summarise(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median launcher/direct ratios (throughput and J/token) with bootstrap CIs."""
    out: dict[str, Any] = {"pairs_ok": 0}
    for key, name in (("tok_s", "throughput"), ("j_per_output_token", "j_per_token")):
        ratios = [
            p["launcher"][key] / p["direct"][key]
            for p in pairs
            if p["launcher"].get(key) and p["direct"].get(key)
        ]
        if not ratios:
            continue
        low, high = median_ci(ratios) if len(ratios) > 1 else (ratios[0], ratios[0])
        out[name] = {
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "median_ratio_ci95": (low, high),
            "mean_ratio": statistics.fmean(ratios),
        }
        out["pairs_ok"] = max(out["pairs_ok"], len(ratios))
    tput = out.get("throughput")
    out["target"] = f">= {TARGET_RATIO}"
    out["meets_target"] = bool(tput and tput["median_ratio"] >= TARGET_RATIO)
    return out


def main(argv: list[str] | None = None) -> int:
    """Alternate the arms in pairs within the budget, print and write the summary."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    pairs: list[dict[str, Any]] = []
    for k in range(args.pairs):
        elapsed = time.perf_counter() - t_start
        if pairs and elapsed + 1.1 * elapsed / len(pairs) > args.budget_s:
            print(
                f"budget {args.budget_s:.0f} s: stopping after {len(pairs)} pairs", file=sys.stderr
            )
            break
        order = ("direct", "launcher") if k % 2 == 0 else ("launcher", "direct")
        pair: dict[str, Any] = {"order": list(order)}
        for arm in order:
            row = one_arm(args, arm)
            pair[arm] = row
            tok = row.get("tok_s")
            what = f"{tok:,.1f} tok/s" if tok else row.get("error", "?")
            print(
                f"[pair {k + 1}/{args.pairs} {arm:8s}] {what}, window "
                f"{row.get('window_s') or 0:.2f} s, wall {row['process_wall_s']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        pairs.append(pair)
    summary = summarise(pairs)
    summary["total_wall_s"] = time.perf_counter() - t_start
    tput = summary.get("throughput")
    if tput:
        lo, hi = tput["median_ratio_ci95"]
        print(
            f"launcher / direct throughput: median {tput['median_ratio']:.4f} "
            f"[95% CI {lo:.4f}, {hi:.4f}] over {len(tput['ratios'])} pairs "
            f"(target >= {TARGET_RATIO}: {'ok' if summary['meets_target'] else 'MISSED'})"
        )
    jt = summary.get("j_per_token")
    if jt:
        lo, hi = jt["median_ratio_ci95"]
        print(
            f"launcher / direct J/output token: median {jt['median_ratio']:.4f} [{lo:.4f}, {hi:.4f}]"
        )
    if summary["pairs_ok"] < args.min_pairs:
        print(
            f"only {summary['pairs_ok']} complete pairs (< {args.min_pairs}): run again (--quick) "
            "and pool the runs: python benchmarks/pool_runs.py launcher RUN.json RUN.json"
        )
    print(f"total wall {summary['total_wall_s']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"args": vars(args), "summary": summary, "pairs": pairs}, indent=2, default=str
            )
        )
    errors = [p[a] for p in pairs for a in ("direct", "launcher") if "error" in p[a]]
    return 1 if errors or not tput else 0


if __name__ == "__main__":
    raise SystemExit(main())
