"""Benchmark the energy layer on a real NVIDIA GPU (written for an H100; ~6 min by default).

    PYTHONPATH=src python benchmarks/gpu_energy.py --out results/gpu_energy.json [--quick]

1. Accuracy: windows of 1 s, 5 s and 30 s, idle and under a bf16 matmul loop (optionally a
   random-weight Llama-3.2-1B-shaped ``generate`` loop, ``--llama-load``). The meter's GPU
   energy is compared with the raw counter delta read directly with pynvml right inside the
   same window edges (ratio; target within 1 %), next to the polled (trapezoid) cross-check.
   Both read a counter that steps every ~100 ms, so the raw counter is read right outside
   and right inside each meter edge: with no step in between the meter must equal the inner
   delta exactly, otherwise lie between the inner and the outer delta ("in bracket").
2. Overhead: output tokens/s of batch-1 and batch-64 ``model.generate`` (Llama-3.2-1B shape,
   random weights, bf16, 64 in / 64 out, min_new_tokens = max_new_tokens), static cache by
   default (``--modes eager,static`` adds eager, whose CPU-bound decoding swings by 10-20 %
   between seconds on the GPU VM), with an EnergySession (meter + sampler process) running,
   divided by the same calls with nothing running; blocks of >= 2 s of calls in pairs of
   alternating order, as many pairs as fit in 90 s per setting (at least ``--pairs``); the
   median ratio with its bootstrap 95% CI is reported (target >= 0.99). See
   energy_overhead.py, and sampler_tick_cost.py for the per-sample cost measured directly.
3. The environment snapshot and the telemetry timeline (Parquet) of the accuracy run.

torch is imported only inside functions, and the entry point is guarded by ``__main__``,
because the sampler is started with ``spawn``, which re-imports this file in its process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import energy_overhead  # type: ignore[import-not-found]  # benchmarks/ sibling

from llenergymeasure.core.energy import BaselineSettings, EnergySession
from llenergymeasure.core.environment import collect_environment

LLAMA_3_2_1B_SHAPE = {
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 8192,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
    "max_position_embeddings": 4096,
}


def parse_args() -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="JSON results path")
    p.add_argument("--quick", action="store_true", help="short smoke pass (~1.5 min)")
    p.add_argument("--windows", default=None, help="window lengths in s, e.g. 1,5,30")
    p.add_argument("--repeats", type=int, default=None, help="repeats of windows shorter than 10 s")
    p.add_argument(
        "--pairs", type=int, default=None, help="on/off pairs for the overhead test (>= 5)"
    )
    p.add_argument("--batches", default="1,64", help="batch sizes for the overhead test")
    p.add_argument("--sections", default="accuracy,overhead", help="which sections to run")
    p.add_argument("--in-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--modes", default="static", help="cache modes for the overhead test")
    p.add_argument("--model", default="llama-3.2-1b", help="catalogue model of the overhead test")
    p.add_argument(
        "--sampler-fields", default=None, help="overhead: sample only these fields (diagnostic)"
    )
    p.add_argument("--torch-threads", type=int, default=None, help="overhead: torch CPU threads")
    p.add_argument(
        "--pin-cpu", type=int, default=None, help="overhead: pin the main thread to this CPU"
    )
    p.add_argument(
        "--min-block-s", type=float, default=None, help="overhead: seconds of timed calls per block"
    )
    p.add_argument(
        "--setting-s",
        type=float,
        default=None,
        help="overhead: keep adding pairs until this many seconds have passed (per setting)",
    )
    p.add_argument("--llama-load", action="store_true", help="also measure windows under generate")
    p.add_argument("--baseline-s", type=float, default=None, help="idle baseline duration")
    p.add_argument("--sample-interval-ms", type=float, default=100.0)
    args = p.parse_args()
    quick = args.quick
    args.windows = [float(w) for w in (args.windows or ("1,3" if quick else "1,5,30")).split(",")]
    args.repeats = args.repeats or (2 if quick else 3)
    args.pairs = args.pairs or (3 if quick else 5)
    args.min_block_s = args.min_block_s or (0.5 if quick else 2.0)
    args.setting_s = args.setting_s if args.setting_s is not None else (0.0 if quick else 90.0)
    args.modes = args.modes.split(",")
    args.sampler_fields = tuple(args.sampler_fields.split(",")) if args.sampler_fields else None
    args.sections = sorted(set(args.sections.split(",")))
    args.baseline_s = args.baseline_s if args.baseline_s is not None else (3.0 if quick else 10.0)
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


# --- loads -------------------------------------------------------------------------------
def sync() -> None:
    """Wait for the GPU (window edges must bracket the work)."""
    import torch

    torch.cuda.synchronize()


def idle_load(duration_s: float, _state: dict[str, Any]) -> None:
    """Do nothing for ``duration_s``."""
    time.sleep(duration_s)


def matmul_load(duration_s: float, state: dict[str, Any]) -> None:
    """bf16 8192^3 matmuls until ``duration_s`` has passed (checked every 10 products)."""
    import torch

    if "a" not in state:
        state["a"] = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        state["b"] = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        for _ in range(10):
            state["c"] = state["a"] @ state["b"]
        torch.cuda.synchronize()


def build_llama() -> Any:
    """Random-weight Llama-3.2-1B-shaped model, bf16, on cuda:0, eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA_3_2_1B_SHAPE, pad_token_id=0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    return model.to(torch.bfloat16).eval()


def generate_once(model: Any, batch: int, in_tokens: int, new_tokens: int) -> int:
    """One greedy generate call with a fixed number of new tokens; returns output tokens."""
    import torch

    ids = torch.randint(3, 32000, (batch, in_tokens), device="cuda", generator=None)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return int((out.shape[1] - in_tokens) * batch)


def llama_load(duration_s: float, state: dict[str, Any]) -> None:
    """Batch-8 generate calls until ``duration_s`` has passed."""
    if "model" not in state:
        state["model"] = build_llama()
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        generate_once(state["model"], 8, 64, 16)


# --- 1. accuracy -------------------------------------------------------------------------
def measure_window(
    session: EnergySession,
    handle: Any,
    name: str,
    load: Any,
    duration_s: float,
    state: dict[str, Any],
) -> dict[str, Any]:
    """One window: the meter vs the raw counter, read with pynvml right outside and right
    inside each of the meter's edges.

    The meter's own reads happen somewhere between our "outside" and "inside" reads (a few
    ms apart). When the counter did not step in between (``outside == inside`` at both
    edges) the meter must equal the inner delta exactly; when it did, the meter's delta must
    lie between the inner and the outer delta (``in_bracket``), and the ratio to the inner
    delta can differ from 1 by one counter step (~100 ms of energy).
    """
    import pynvml

    def raw_mj() -> int:
        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    a_out = raw_mj()
    session.begin_window(name, sync=sync)
    a_in = raw_mj()
    load(duration_s, state)
    sync()
    b_in = raw_mj()
    report = session.end_window(name)
    b_out = raw_mj()
    raw_j = (b_in - a_in) / 1000.0
    outer_j = (b_out - a_out) / 1000.0
    meter_j = report.gpu_energy_j
    return {
        "window": name,
        "target_s": duration_s,
        "duration_s": report.duration_s,
        "meter_j": meter_j,
        "raw_counter_j": raw_j,
        "raw_counter_outer_j": outer_j,
        "counter_stepped_between_reads": a_out != a_in or b_out != b_in,
        "in_bracket": meter_j is not None and raw_j - 1e-6 <= meter_j <= outer_j + 1e-6,
        "ratio": (meter_j / raw_j) if meter_j and raw_j else None,
        "polled_j": report.polled_gpu_energy_j,
        "polled_vs_counter_pct": report.counter_vs_polled_pct,
        "mean_power_w": (meter_j / report.duration_s) if meter_j else None,
        "samples": report.thermal.sample_count if report.thermal else None,
        "flags": [f.code for f in report.warnings],
    }


def accuracy(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Section 1: windows of each length under each load; also the timeline and baseline."""
    import pynvml

    timeline = out_dir / "gpu_energy_timeline.parquet"
    baseline = BaselineSettings(
        duration_s=args.baseline_s,
        cache_ttl_s=0.0,
        cache_path=Path(tempfile.mkdtemp()) / "baseline.json",
    )
    session = EnergySession(
        "nvml",
        gpu_indices=[0],
        sample_interval_ms=args.sample_interval_ms,
        timeline_path=timeline,
        baseline=baseline,
    )
    session.start()
    assert session.plan is not None
    nvml_index = session.plan.gpus[0].nvml_index
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
    loads = {"idle": idle_load, "matmul": matmul_load}
    if args.llama_load:
        loads["llama_generate_b8"] = llama_load
    state: dict[str, Any] = {}
    rows = []
    try:
        idle = session.measure_baseline()
        for load_name, load in loads.items():
            load(1.0, state)  # warm: allocate, compile kernels, spin clocks up
            for w in args.windows:
                for r in range(args.repeats if w < 10 else 1):
                    row = measure_window(session, handle, f"{load_name}_{w:g}s_{r}", load, w, state)
                    row["load"] = load_name
                    rows.append(row)
                    print(
                        f"  {load_name:>18} {w:5.1f} s  meter {row['meter_j']:9.2f} J  raw "
                        f"{row['raw_counter_j']:9.2f} J  ratio {row['ratio'] or float('nan'):.4f}  "
                        f"{'stepped' if row['counter_stepped_between_reads'] else 'exact  '}  "
                        f"in bracket {row['in_bracket']}  "
                        f"polled {row['polled_vs_counter_pct'] or float('nan'):+6.2f} %",
                        flush=True,
                    )
        periods = session.plan.nvml_meter.update_period_s if session.plan.nvml_meter else {}
    finally:
        written = session.stop()
        pynvml.nvmlShutdown()
        state.clear()
    return {
        "windows": rows,
        "timeline_path": str(written) if written else None,
        "idle_baseline": idle.model_dump(mode="json") if idle else None,
        "counter_update_period_s": periods,
    }


# --- 2. overhead -------------------------------------------------------------------------
def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Section 2: session on / off throughput in alternating blocks (see energy_overhead.py)."""
    return energy_overhead.run(args)


# --- 3. report ---------------------------------------------------------------------------
def summary_table(acc: dict[str, Any] | None, ovh: dict[str, Any]) -> str:
    """Short text table of both sections.

    "no step": windows where the counter did not step between the meter's reads and ours,
    and the largest |meter / raw - 1| among them (must be 0); "in bracket": windows whose
    meter delta lies between the inner and outer raw deltas; "all": largest |ratio - 1|.
    """
    lines = [
        "",
        "load                 window  windows  no step  max|r-1| no step  in bracket  "
        "max|r-1| all  median polled-vs-counter",
        "-" * 112,
    ]
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in acc["windows"] if acc else []:
        groups.setdefault((r["load"], r["target_s"]), []).append(r)
    for (load, w), rows in groups.items():
        exact = [r for r in rows if not r["counter_stepped_between_reads"]]
        polled = [
            r["polled_vs_counter_pct"] for r in rows if r["polled_vs_counter_pct"] is not None
        ]
        pol = statistics.median(polled) if polled else float("nan")
        inside = sum(bool(r["in_bracket"]) for r in rows)
        lines.append(
            f"{load:<20} {w:5.1f} s  {len(rows):7d}  {len(exact):7d}  "
            f"{100 * _worst(exact):13.3f} %  {inside:6d}/{len(rows):<3d}  "
            f"{100 * _worst(rows):10.2f} %  {pol:+10.2f} %"
        )
    lines += ["", *energy_overhead.table(ovh)]
    return "\n".join(lines)


def _worst(rows: list[dict[str, Any]]) -> float:
    """Largest |meter / raw - 1| (nan for none)."""
    return max((abs(r["ratio"] - 1) for r in rows if r["ratio"]), default=float("nan"))


def main() -> None:
    """Run all sections, save JSON to --out, print the table."""
    import torch

    args = parse_args()
    if not torch.cuda.is_available() and args.sections != ["overhead"]:
        raise SystemExit("No CUDA device: this benchmark needs an NVIDIA GPU.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    acc = None
    if "accuracy" in args.sections:
        print("[1/3] accuracy", flush=True)
        acc = accuracy(args, args.out.parent)
    ovh: dict[str, Any] = {}
    if "overhead" in args.sections:
        print("[2/3] overhead", flush=True)
        ovh = overhead(args)
    print("[3/3] environment", flush=True)
    env = collect_environment()
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "accuracy": acc,
        "overhead": ovh,
        "environment": env.model_dump(mode="json"),
        "timeline_path": acc["timeline_path"] if acc else None,
        "wall_s": time.monotonic() - t_start,
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(summary_table(acc, ovh))
    print(f"\nsaved {args.out} and {result['timeline_path']} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
