"""What a PyTorch experiment's first warm-up call pays once, and what it would pay after probes.

The H200 study-overhead run (benchmarks/results/h200-2026-12-02/) showed the first warm-up
call of every experiment at ~5.8 s against ~0.85 s for the later ones (Llama-3.2-1B shape,
bf16, dynamic cache, batch 128, 128 in / 64 out). Each experiment is a fresh process, so
whatever the first call pays once it pays in every experiment. This script finds out what
that is, each variant in a fresh ``spawn`` process that builds the model through the tool's
own backend (``PyTorchBackend.initialize`` + ``tokenize``) and then calls the tool's own
``warmup_step`` (the full first batch, step recorder included):

- ``plain``: warm-up calls 1..3, timed;
- ``cprofile``: call 1 under cProfile (Python-level: lazy imports, first-use set-up), the
  top functions by cumulative and by own time;
- ``torchprof``: call 1 under ``torch.profiler`` (CPU + CUDA activities): the CUDA API calls
  by own CPU time (kernel module loads, allocations, handle creation);
- ``probes``: before call 1, timed one-time steps in order: a CUDA sync, a bf16 matmul
  (cuBLAS/cuBLASLt handles and workspaces), one ``model(...)`` forward on one short row, a
  2-token ``generate`` on the first batch; then calls 1..3 (how much of the excess is left);
- ``eager_modules``: ``plain`` with ``CUDA_MODULE_LOADING=EAGER`` (every kernel loaded at
  context creation, inside load instead of the first call);
- ``avoid_recompile``: ``plain`` with ``TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1`` (PyTorch's opt-in
  ragged path for cuDNN attention: one execution plan for every sequence length instead of
  one per length; the H200 run found cuDNN plan building to be most of the first call).

- ``no_cudnn``: ``plain`` with ``pytorch.sdpa_backends: [flash, efficient]`` (PyTorch's
  attention kept off cuDNN: no plan per sequence length; a different kernel, so compare the
  steady calls too).

``--calls`` warm-up calls per variant (default 3); a variant may be named twice
(``plain,avoid_recompile,avoid_recompile,plain``) to alternate them.

    PYTHONPATH=/tmp/site:$PWD/src python3 benchmarks/gpu_first_call.py --out first_call.json
    python benchmarks/gpu_first_call.py --cpu-smoke --out smoke.json     # tiny-llama on the CPU
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

try:
    import llenergymeasure  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VARIANTS = (
    "plain",
    "cprofile",
    "torchprof",
    "probes",
    "eager_modules",
    "avoid_recompile",
    "no_cudnn",
)
#: cuDNN attention without a new execution plan per sequence length (PyTorch >= 2.9, opt-in)
AVOID_RECOMPILE_ENV = "TORCH_CUDNN_SDPA_AVOID_RECOMPILE"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="llama-3.2-1b")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--calls", type=int, default=3, help="warm-up calls per variant (>= 2)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny-llama, fp32, CPU")
    p.add_argument("--out", type=Path, default=Path("gpu_first_call.json"))
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.model, args.batch, args.input_len, args.output_len = "tiny-llama", 8, 32, 8
    return args


def _config(args: argparse.Namespace, name: str = "plain") -> Any:
    from llenergymeasure.config.models import ExperimentConfig

    section: dict[str, Any] = {"batch_size": args.batch}
    if name == "no_cudnn":
        section["sdpa_backends"] = ["flash", "efficient"]

    return ExperimentConfig(
        model=args.model,
        backend="pytorch",
        weights="random",
        precision="fp32" if args.cpu_smoke else "bf16",
        device="cpu" if args.cpu_smoke else "cuda",
        dataset={"input_len": args.input_len, "output_len": args.output_len, "seed": 0},
        n=args.batch,
        max_input_tokens=args.input_len,
        max_output_tokens=args.output_len,
        pytorch=section,
    )


def _top(profile: cProfile.Profile, key: str, n: int = 25) -> str:
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats(key).print_stats(n)
    return buf.getvalue()[-6000:]


def _probes(backend: Any, prepared: Any, cuda: bool) -> dict[str, float]:
    """One-time steps before the first warm-up call, each timed (synchronised)."""
    import torch

    def timed(fn: Any) -> float:
        start = time.perf_counter()
        fn()
        backend.synchronize()
        return time.perf_counter() - start

    model = backend._model
    dev, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    hidden = model.config.hidden_size
    batch = prepared.batches[0]
    row = batch.payload.input_ids[:1, -8:]
    gen = backend._generation_config
    out: dict[str, float] = {}
    out["sync"] = timed(lambda: torch.cuda.synchronize() if cuda else None)
    x = torch.randn(batch.size, hidden, device=dev, dtype=dtype)
    w = torch.randn(hidden, hidden, device=dev, dtype=dtype)
    out["matmul"] = timed(lambda: x @ w)
    out["matmul_again"] = timed(lambda: x @ w)
    with torch.inference_mode():
        out["forward_1x8"] = timed(lambda: model(input_ids=row))
        out["forward_1x8_again"] = timed(lambda: model(input_ids=row))
        saved = gen.max_new_tokens, gen.min_new_tokens
        gen.max_new_tokens = gen.min_new_tokens = 2
        try:
            out["generate_2tok"] = timed(
                lambda: model.generate(
                    input_ids=batch.payload.input_ids,
                    attention_mask=batch.payload.attention_mask,
                    generation_config=gen,
                )
            )
        finally:
            gen.max_new_tokens, gen.min_new_tokens = saved
    return out


def variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One variant, in this (fresh) process."""
    t0 = time.perf_counter()
    if name == "eager_modules":
        os.environ["CUDA_MODULE_LOADING"] = "EAGER"
    if name == "avoid_recompile":
        os.environ[AVOID_RECOMPILE_ENV] = "1"
    import torch
    import transformers

    from llenergymeasure.core.backends.pytorch import PyTorchBackend
    from llenergymeasure.datasets.loader import load_prompts

    result: dict[str, Any] = {
        "variant": name,
        "imports_s": time.perf_counter() - t0,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_module_loading": os.environ.get("CUDA_MODULE_LOADING", "(default)"),
        "avoid_recompile": os.environ.get(AVOID_RECOMPILE_ENV, "(unset)"),
    }
    config = _config(args, name)
    prompts = list(load_prompts(config.dataset, n=config.n))
    backend = PyTorchBackend()
    start = time.perf_counter()
    backend.initialize(config, prompts)
    backend.synchronize()
    result["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    prepared = backend.tokenize(prompts)
    result["tokenize_s"] = time.perf_counter() - start
    if name == "probes":
        result["probes_s"] = _probes(backend, prepared, cuda=not args.cpu_smoke)
    calls: list[float] = []
    if name == "cprofile":
        prof = cProfile.Profile()
        prof.enable()
        calls.append(backend.warmup_step(prepared))
        prof.disable()
        result["cprofile_cumulative"] = _top(prof, "cumulative")
        result["cprofile_tottime"] = _top(prof, "tottime")
    elif name == "torchprof":
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([] if args.cpu_smoke else [ProfilerActivity.CUDA])
        with profile(activities=acts) as tp:
            calls.append(backend.warmup_step(prepared))
        table = tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        result["torchprof_self_cpu"] = table[-8000:]
    for _ in range(max(2, args.calls) - len(calls)):
        calls.append(backend.warmup_step(prepared))
    result["calls_s"] = calls
    result["first_excess_s"] = calls[0] - min(calls[1:])
    backend.cleanup()
    return result


def _child(name: str, args: argparse.Namespace, conn: Any) -> None:
    try:
        conn.send(variant(name, args))
    except Exception as e:  # recorded, the next variant still runs
        import traceback

        conn.send(
            {
                "variant": name,
                "error": f"{type(e).__name__}: {e}",
                "tb": traceback.format_exc()[-3000:],
            }
        )


def main(argv: list[str] | None = None) -> int:
    """Each variant in a fresh spawned process; JSON after each; a short table last."""
    args = parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    results: list[dict[str, Any]] = []
    for name in args.variants.split(","):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(name, args, child))
        wall = time.perf_counter()
        proc.start()
        child.close()
        res = parent.recv() if parent.poll(600) else {"variant": name, "error": "timeout"}
        proc.join(30)
        res["process_wall_s"] = time.perf_counter() - wall
        results.append(res)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "variants": results}, indent=1
            )
        )
        calls = res.get("calls_s")
        print(
            f"{name:14} load {res.get('load_s', float('nan')):6.2f} s  calls "
            + (", ".join(f"{c:.3f}" for c in calls) if calls else res.get("error", "?"))
            + (
                f"  probes {json.dumps({k: round(v, 3) for k, v in res['probes_s'].items()})}"
                if "probes_s" in res
                else ""
            ),
            flush=True,
        )
    for res in results:
        for key in ("cprofile_cumulative", "cprofile_tottime", "torchprof_self_cpu"):
            if key in res:
                print(f"\n== {res['variant']}: {key} ==\n{res[key][-4000:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
