"""Launcher tax: ``pytorch.num_processes: 1`` through the launcher vs the direct path.

Both arms run the same experiment through the public ``run_experiment``: a random-weight
Llama-3.2-1B shape in bf16, greedy, synthetic 64 in / 64 out tokens, batch 64, static
cache (transformers' compiled decode: GPU-bound and steady; ``--cache eager`` is CPU-bound
and swings 10-20 % between seconds on a GPU VM), NVML meter and telemetry sampler on, no
idle baseline, and no counter trace (``telemetry.phase_energy: off``: the launcher never
traces, so a direct arm left on ``auto`` would pay the trace's process and reads alone).
The *direct* arm runs the model in the experiment's process; the *launcher* arm sets
``pytorch.num_processes: 1``, so the experiment's process spawns one worker that runs the
model while the parent holds the energy session and releases the worker with its Go
message (one worker forms no gloo group). Between the worker's window stamps runs exactly
what runs between the direct path's (``tests/integration/test_launcher.py`` checks it call
by call on the CPU).

Each arm runs in a fresh process of its own, so neither inherits the other's CUDA context
or compiled graphs (the on-disk inductor cache is shared; compilation happens in warm-up,
outside the window): by default a child forked from a fork server that has imported torch
and transformers, as a study starts its experiments (``study.child``); ``--start spawn``
gives each arm a fresh interpreter that imports them itself. The launcher arm's worker is
always a spawn child importing everything, as in every launched run. Arms alternate in
pairs, order flipped every pair (D L, L D, ...) against drift.

Per pair: launcher / direct output tokens/s of the window (median of the pair ratios with a
percentile-bootstrap 95 % CI, bench_stats.median_ci; target >= 0.98) and J/output token;
the per-step speed, direct / launcher median ITL (the decode steps alone: blind to a
one-off cost in the window); and the window excess, launcher - direct window, with the part
the per-step speed does not explain (launcher window - direct window x ITL ratio: a fixed
cost such as a slow first batch). Per arm the JSON also keeps E2E (max vs median: one slow
batch shows), the SM clocks and mean power the sampler saw, the launch record's
``start_barrier`` and the phase durations (where the arm's time went).

    PYTHONPATH=src python benchmarks/gpu_launcher_tax.py --out launcher_tax.json          # ~8-9 min (est.), H200
    PYTHONPATH=src python benchmarks/gpu_launcher_tax.py --quick --out launcher_tax.json  # ~6-7 min (est.)
    PYTHONPATH=src python benchmarks/gpu_launcher_tax.py --cpu-smoke --out smoke.json     # CPU, tiny-llama

Measured on one H200 (2026-12-02, ``benchmarks/results/h200-2026-12-02-s2/launcher/``),
with ``--cache eager --batch 256 --input-len 128 --n 768`` (what ``gpu_acceptance.sh`` runs:
no compile warm-up, ~35 s a pair, ~2.4 s windows): two runs of 6 and 4 pairs, pooled
launcher / direct throughput 1.008 [0.935, 1.115], J/token 0.992 [0.949, 1.024]; eager decode
is CPU-bound there and two direct windows ran at 15 ms per step instead of 10, hence the CI.

Cost: an arm is its process start, imports, model build, energy start and compile warm-up
besides its window; the launcher arm also starts its worker, which imports torch and
transformers and compiles again. Measured on one H200 (2026-12-02, spawned arms, 2 s
windows): 56 s direct, 63 s launcher per arm (setup 48 s and 55 s), so a pair costs ~2 min
whatever its windows; the fork server saves the direct arm its framework imports (and the
launcher's parent its transformers import; its worker imports everything, as in every
launched run): estimated 5-10 s per pair, not yet measured. A longer window therefore
costs little and is the default: n = 1024 (16 batches, ~5.3 s at ~12.5k tok/s; quick: n =
768, ~4 s), i.e. ~115 s per pair (est.; the first arm also compiles with a cold inductor
cache). No new pair starts once the next would overrun ``--budget-s`` (540 s, quick 420 s:
one 10-minute device call each), so expect 4 pairs (quick: 3) per call: 5 pairs do not fit
one call. Fewer than ``--min-pairs`` complete pairs is said; pool two calls' runs with
``pool_runs.py launcher`` (>= 6 pairs). Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
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
ARMS = ("direct", "launcher")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON with every arm and the ratios")
    p.add_argument("--quick", action="store_true", help="3 pairs, ~4 s windows")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny-llama on the CPU, 2 pairs")
    p.add_argument("--pairs", type=int, default=None, help="pairs to run (default 5, quick 3)")
    p.add_argument("--min-pairs", type=int, default=5, help="fewer complete pairs: say so")
    p.add_argument(
        "--budget-s", type=float, default=None, help="no new pair after (540, quick 420 s)"
    )
    p.add_argument("--model", default="llama-3.2-1b")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=None, help="requests per arm (1024, quick 768)")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--cache", choices=["static", "eager"], default="static")
    p.add_argument(
        "--start",
        choices=["forkserver", "spawn"],
        default="forkserver",
        help="how arm processes start: forked from a server with torch imported (as a "
        "study's experiments), or spawned (a fresh interpreter each)",
    )
    p.add_argument("--results-dir", type=Path, default=Path("results/gpu_launcher_tax"))
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.model, args.precision, args.batch, args.cache = "tiny-llama", "fp32", 4, "eager"
        args.input_len, args.output_len = 16, 8
        args.n = args.n or 32
        args.pairs = args.pairs or 2
        args.min_pairs = min(args.min_pairs, args.pairs)
    args.pairs = args.pairs or (3 if args.quick else 5)
    args.n = args.n or (768 if args.quick else 1024)
    if args.budget_s is None:
        args.budget_s = 420.0 if args.quick or args.cpu_smoke else 540.0
    if args.quick:
        args.min_pairs = min(args.min_pairs, args.pairs)
    if args.start == "forkserver" and "forkserver" not in multiprocessing.get_all_start_methods():
        args.start = "spawn"
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
        # the launcher never traces the counter (phase_trace_settings): neither does direct
        "telemetry": {"enabled": True, "save_timeseries": False, "phase_energy": "off"},
    }


def _stats(stats: Any, *names: str) -> dict[str, float] | None:
    """Some fields of a LatencyStats (None when not measured)."""
    return {n: getattr(stats, n) for n in names} if stats is not None else None


def _start_barrier(run_dir: str | None) -> str | None:
    """How a launched run released its workers (raw/launch.json); None for a direct run."""
    path = Path(run_dir) / "raw" / "launch.json" if run_dir else None
    if path is None or not path.exists():
        return None
    value = json.loads(path.read_text()).get("start_barrier")
    return str(value) if value is not None else None


def arm_row(arm: str, result: Any) -> dict[str, Any]:
    """The figures of one arm's result."""
    energy, metrics = result.energy, result.metrics
    latency = metrics.latency if metrics is not None else None
    thermal = energy.thermal if energy is not None else None
    return {
        "arm": arm,
        "tok_s": result.output_tokens_per_s,
        "window_s": result.measurement_window_s,
        "j_per_output_token": result.j_per_output_token,
        "energy_j": result.energy_j,
        "energy_window_s": energy.duration_s if energy else None,
        "itl_ms": _stats(latency.itl if latency else None, "p50_ms", "mean_ms"),
        "ttft_ms": _stats(latency.ttft if latency else None, "p50_ms", "max_ms"),
        "e2e_ms": _stats(latency.e2e if latency else None, "min_ms", "p50_ms", "max_ms"),
        "sm_clock_mhz": [thermal.sm_clock_start_mhz, thermal.sm_clock_end_mhz] if thermal else None,
        "mean_power_w": thermal.mean_power_w if thermal else None,
        "throttle_s": dict(thermal.throttle_s_by_reason) if thermal else None,
        "setup_s": result.setup_s,
        "phases_s": dict(result.phase_durations_s),
        "n_processes": result.n_processes,
        "start_barrier": _start_barrier(result.run_dir),
        "partial": result.partial,
        "warnings": [f"{w.code}: {w.message}" for w in result.warnings],
        "run_dir": result.run_dir,
        "gpu": result.environment.gpus[0].name
        if result.environment and result.environment.gpus
        else None,
    }


def run_arm(arm: str, keywords: dict[str, Any], results_dir: str, conn: Connection) -> None:
    """Child: one experiment; sends its figures (or the error) to the parent."""
    t0 = time.perf_counter()
    try:
        from llenergymeasure.lifeline import die_with_parent

        die_with_parent(os.getppid())  # the benchmark, or its fork server (dies with it)
        from llenergymeasure import run_experiment

        result = run_experiment(results_dir=results_dir, **keywords)
        conn.send(arm_row(arm, result) | {"wall_s": time.perf_counter() - t0})
    except Exception as e:  # the parent records it and goes on
        conn.send({"arm": arm, "error": repr(e), "traceback": traceback.format_exc()})
    finally:
        conn.close()


def arm_context(start: str) -> Any:
    """Where arm processes come from: the study's own child context (a fork server with the
    frameworks imported, `study.child`), or spawn."""
    if start == "spawn":
        return multiprocessing.get_context("spawn")
    from llenergymeasure.study.child import child_context

    return child_context(frameworks=True)


def one_arm(args: argparse.Namespace, arm: str, ctx: Any) -> dict[str, Any]:
    """Run one arm in a fresh child and wait for it (blocking, with a timeout)."""
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


def _ratio_summary(ratios: list[float]) -> dict[str, Any]:
    low, high = median_ci(ratios) if len(ratios) > 1 else (ratios[0], ratios[0])
    return {
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "median_ratio_ci95": (low, high),
        "mean_ratio": statistics.fmean(ratios),
    }


def _itl(row: dict[str, Any]) -> float | None:
    itl = row.get("itl_ms")
    return float(itl["p50_ms"]) if itl and itl.get("p50_ms") else None


def summarise(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median launcher/direct ratios (throughput, J/token, per-step speed) with bootstrap
    CIs, the window excess and its fixed part, and the mean cost of each arm."""
    out: dict[str, Any] = {"pairs_ok": 0}
    for key, name in (("tok_s", "throughput"), ("j_per_output_token", "j_per_token")):
        ratios = [
            p["launcher"][key] / p["direct"][key]
            for p in pairs
            if p["launcher"].get(key) and p["direct"].get(key)
        ]
        if ratios:
            out[name] = _ratio_summary(ratios)
            out["pairs_ok"] = max(out["pairs_ok"], len(ratios))
    excess, fixed, speed = [], [], []
    for p in pairs:
        d, la = p["direct"], p["launcher"]
        if not (d.get("window_s") and la.get("window_s")):
            continue
        excess.append(la["window_s"] - d["window_s"])
        itl_d, itl_l = _itl(d), _itl(la)
        if itl_d and itl_l:
            speed.append(itl_d / itl_l)
            fixed.append(la["window_s"] - d["window_s"] * itl_l / itl_d)
    if speed:
        out["per_step_speed"] = _ratio_summary(speed)  # direct ITL / launcher ITL
    if excess:
        out["window_excess_s"] = {"values": excess, "median": statistics.median(excess)}
    if fixed:
        out["window_fixed_part_s"] = {"values": fixed, "median": statistics.median(fixed)}
    out["arm_cost_s"] = _arm_cost(pairs)
    tput = out.get("throughput")
    out["target"] = f">= {TARGET_RATIO}"
    out["meets_target"] = bool(tput and tput["median_ratio"] >= TARGET_RATIO)
    return out


def _arm_cost(pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm kind, the mean process wall time and phase durations (s)."""
    cost: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        rows = [p[arm] for p in pairs if "error" not in p[arm]]
        if not rows:
            continue
        phases = sorted({k for r in rows for k in r.get("phases_s", {})})
        cost[arm] = {
            "process_wall_s": statistics.fmean(r["process_wall_s"] for r in rows),
            **{
                k: statistics.fmean(r.get("phases_s", {}).get(k, 0.0) for r in rows) for k in phases
            },
        }
    return cost


def _arm_line(k: int, args: argparse.Namespace, arm: str, row: dict[str, Any]) -> str:
    tok = row.get("tok_s")
    if not tok:
        return f"[pair {k + 1}/{args.pairs} {arm:8s}] {row.get('error', '?')}"
    itl, e2e = row.get("itl_ms") or {}, row.get("e2e_ms") or {}
    clocks = row.get("sm_clock_mhz") or [None, None]
    clock = "/".join(f"{c:.0f}" for c in clocks if c is not None) or "?"
    return (
        f"[pair {k + 1}/{args.pairs} {arm:8s}] {tok:,.1f} tok/s, window "
        f"{row.get('window_s') or 0:.3f} s, ITL p50 {itl.get('p50_ms', 0):.3f} ms, E2E "
        f"p50/max {e2e.get('p50_ms', 0):.0f}/{e2e.get('max_ms', 0):.0f} ms, SM {clock} MHz, "
        f"wall {row['process_wall_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Alternate the arms in pairs within the budget, print and write the summary."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    ctx = arm_context(args.start)
    pairs: list[dict[str, Any]] = []
    for k in range(args.pairs):
        elapsed = time.perf_counter() - t_start
        if pairs and elapsed + 1.1 * elapsed / len(pairs) > args.budget_s:
            print(
                f"budget {args.budget_s:.0f} s: stopping after {len(pairs)} pairs", file=sys.stderr
            )
            break
        order = ARMS if k % 2 == 0 else ARMS[::-1]
        pair: dict[str, Any] = {"order": list(order)}
        for arm in order:
            pair[arm] = one_arm(args, arm, ctx)
            print(_arm_line(k, args, arm, pair[arm]), file=sys.stderr, flush=True)
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
    for name, label in (("j_per_token", "J/output token"), ("per_step_speed", "per-step speed")):
        got = summary.get(name)
        if got:
            lo, hi = got["median_ratio_ci95"]
            print(
                f"launcher / direct {label}: median {got['median_ratio']:.4f} [{lo:.4f}, {hi:.4f}]"
            )
    if "window_fixed_part_s" in summary:
        print(
            f"window excess (launcher - direct): median {summary['window_excess_s']['median']:+.4f} s,"
            f" of it not from the per-step speed {summary['window_fixed_part_s']['median']:+.4f} s"
        )
    for arm, cost in summary["arm_cost_s"].items():
        top = sorted(((v, k) for k, v in cost.items() if k != "process_wall_s"), reverse=True)[:4]
        parts = ", ".join(f"{k} {v:.1f}" for v, k in top)
        print(f"{arm} arm: {cost['process_wall_s']:.1f} s per process ({parts})")
    if summary["pairs_ok"] < args.min_pairs:
        print(
            f"only {summary['pairs_ok']} complete pairs (< {args.min_pairs}): run again and pool "
            "the runs: python benchmarks/pool_runs.py launcher RUN.json RUN.json"
        )
    print(f"total wall {summary['total_wall_s']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"args": vars(args), "summary": summary, "pairs": pairs}, indent=2, default=str
            )
        )
    errors = [p[a] for p in pairs for a in ARMS if "error" in p[a]]
    return 1 if errors or not tput else 0


if __name__ == "__main__":
    raise SystemExit(main())
