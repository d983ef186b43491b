"""Where does the backend's throughput tax come from? (diagnostic for gpu_experiment_harness.py)

For one setting (default: static cache, batch 64, Llama-3.2-1B shape, bf16, 64/64 tokens) it
times, in one process and in rotating order, runs over the same prepared batches of:

- ``ref``: plain ``model.generate`` with a fresh GenerationConfig (the harness reference);
- ``ref+gencfg``: plain generate with the backend's own GenerationConfig object;
- ``ref+recorder``: plain generate (fresh config) plus the tool's StepRecorder (CUDA events);
- ``tool``: ``PyTorchBackend.run_inference`` (what ``llem run`` times).

Each run's per-batch generate durations are kept, so a first-batch penalty shows separately
from a per-step one. Prints median tokens/s of every variant relative to ``ref``.

    python benchmarks/gpu_tax_breakdown.py --out tax.json [--mode static --batch 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gpu_experiment_harness as harness
import torch
from bench_stats import median_ci
from transformers import StoppingCriteriaList

from llenergymeasure.core.backends.protocol import PreparedBatches
from llenergymeasure.core.backends.pytorch import PyTorchBackend
from llenergymeasure.core.latency import make_step_recorder
from llenergymeasure.core.latency_clock import TokenClock
from llenergymeasure.datasets.loader import load_prompts


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_run(
    model: Any, prepared: PreparedBatches, gen: Any, device: str, recorder: bool
) -> tuple[float, list[float]]:
    """Plain generate over every batch (optionally with the step recorder); tok/s, batch s."""
    rec = make_step_recorder(TokenClock(), device) if recorder else None
    extra = {"stopping_criteria": StoppingCriteriaList([rec])} if rec else {}
    sync()
    start = time.perf_counter()
    n_out, batch_s = 0, []
    with torch.inference_mode():
        for i, batch in enumerate(prepared.batches):
            b0 = time.perf_counter()
            if rec:
                rec.begin_batch([f"{start}-{i}-{j}" for j in range(batch.size)], batch.input_tokens)
            out = model.generate(
                input_ids=batch.payload.input_ids,
                attention_mask=batch.payload.attention_mask,
                generation_config=gen,
                **extra,
            )
            new = out.shape[1] - batch.padded_length
            if rec:
                rec.end_batch([new] * batch.size)
            n_out += new * batch.size
            batch_s.append(time.perf_counter() - b0)
    sync()
    return n_out / (time.perf_counter() - start), batch_s


def tool_run(backend: PyTorchBackend, prepared: PreparedBatches) -> tuple[float, list[float]]:
    """The backend's measured part; tok/s and its per-batch durations."""
    backend.synchronize()
    start = time.perf_counter()
    output = backend.run_inference(prepared)
    backend.synchronize()
    return output.output_tokens / (time.perf_counter() - start), list(output.batch_durations_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", default="static", choices=["eager", "static"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=4, help="batches per run")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("tax.json"))
    p.add_argument("--model", default="llama-3.2-1b")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: smoke run")
    args = p.parse_args(argv)
    hargs = harness.parse_args(["--model", args.model, "--device", args.device])
    hargs.input_len, hargs.output_len = 64, 64
    if args.device == "cpu":
        hargs.precision = "fp32"
    config = harness.make_config(hargs, args.mode, args.batch)
    n = args.batch * args.batches
    prompts = list(load_prompts({"n": n, "input_len": 64, "output_len": 64, "seed": 0}))
    backend = PyTorchBackend()
    backend.initialize(config, prompts)
    prepared = backend.tokenize(prompts)
    model, tok = backend._require_model(), backend._require_tokenizer()
    device = str(model.device)
    ref_gen = harness.reference_generation_config(args.mode, 64, tok.pad_token_id, tok.eos_token_id)
    variants = {
        "ref": lambda: plain_run(model, prepared, ref_gen, device, False),
        "ref+gencfg": lambda: plain_run(
            model, prepared, backend._require_generation_config(), device, False
        ),
        "ref+recorder": lambda: plain_run(model, prepared, ref_gen, device, True),
        "tool": lambda: tool_run(backend, prepared),
    }
    for _ in range(2):  # warm-up: compile every path
        for fn in variants.values():
            fn()
    runs: dict[str, list[tuple[float, list[float]]]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            runs[name].append(variants[name]())
    ref_med = statistics.median(r[0] for r in runs["ref"])
    report = {}
    print(f"{args.mode} b{args.batch}, {args.batches} batches/run, {args.reps} reps")
    print(
        f"{'variant':14} {'tok/s':>9} {'vs ref':>7} {'first batch ms':>15} {'later batch ms':>15}"
    )
    for name, rs in runs.items():
        tps = [r[0] for r in rs]
        first = statistics.median(r[1][0] for r in rs) * 1e3
        later = statistics.median(x for r in rs for x in r[1][1:]) * 1e3
        pair = [a[0] / b[0] for a, b in zip(rs, runs["ref"], strict=True)]
        report[name] = {
            "tok_s": tps,
            "batch_s": [r[1] for r in rs],
            "median_tok_s": statistics.median(tps),
            "vs_ref_median_of_ratios": statistics.median(pair),
            "vs_ref_ci95": median_ci(pair),
        }
        print(
            f"{name:14} {statistics.median(tps):9.1f} {statistics.median(tps) / ref_med:7.3f} "
            f"{first:15.1f} {later:15.1f}"
        )
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, **report}))
    backend.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
