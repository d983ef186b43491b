"""Energy by phase and per request on a GPU: the acceptance check of the phase regression.

SKETCH, NOT YET RUN ON A GPU. It works without the orchestrator: the counter (and the power
fields) are read in spawned processes (``gpu_sensor_characterise.reader``), token times come
from the tool's ``StepRecorder`` (CUDA events; docs/measurement.md section 9) on a
``time.monotonic`` token clock, and the analysis is ``core/energy/phases.py`` and
``core/energy/per_request.py``. Three windows of static batches (random-weight
Llama-3.2-1B shape, bf16, cuda:0), each at least ``--window-s``:

- ``mixed``: prompts of 128-384 tokens, ``--new-tokens`` (128) new tokens;
- ``prefill_only``: the same prompts, max_new_tokens=1 (many short batches);
- ``decode_heavy``: the same prompts, 4x the new tokens.

Prompt lengths vary and a random 0-20 ms pause follows some batches, so that the phases'
shares differ between counter intervals (a workload in lock-step with the counter's period
is not identifiable). Checks printed at the end: the model's phases sum to the window's
counter energy within 1 % (``residual_pct``); the mixed window's prefill J/token agrees with
the prefill-only window's within 10 % or within the CIs, and decode J/token with the
decode-heavy window's; per-request energies sum to the window's counter energy.

    PYTHONPATH=src python benchmarks/gpu_phase_energy.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import gpu_energy  # type: ignore[import-not-found]  # benchmarks/ sibling
import gpu_sensor_characterise as sensor  # type: ignore[import-not-found]
import numpy as np

from llenergymeasure.core.energy._nvml import nvml
from llenergymeasure.core.energy.intervals import counter_intervals
from llenergymeasure.core.energy.per_request import per_request_energy
from llenergymeasure.core.energy.phases import fine_signal_estimate, phase_energy_report
from llenergymeasure.core.energy.sensor_profiles import choose_method, profile_for
from llenergymeasure.core.energy.step_records import static_batch_spans, static_batch_steps
from llenergymeasure.core.latency import make_step_recorder
from llenergymeasure.core.latency_clock import TokenClock


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="12 s windows")
    p.add_argument("--window-s", type=float, default=None, help="default 30 (quick: 12)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path("results/gpu_phase_energy"))
    args = p.parse_args()
    args.window_s = args.window_s or (12.0 if args.quick else 30.0)
    return args


def run_window(model: Any, args: argparse.Namespace, name: str, new_tokens: int, rng: Any) -> dict[str, Any]:  # fmt: skip
    """Static batches for at least ``window_s``; the window edges and every request's timing."""
    import torch
    from transformers import StoppingCriteriaList

    clock = TokenClock(time.monotonic)  # the readers' clock
    recorder = make_step_recorder(clock, "cuda:0")
    gpu_energy.generate_once(model, args.batch, 256, new_tokens)  # warm-up, outside the window
    torch.cuda.synchronize()
    t0 = time.monotonic()
    k = 0
    while time.monotonic() < t0 + args.window_s:
        n_in = int(rng.integers(128, 385))
        ids = torch.randint(3, 32000, (args.batch, n_in), device="cuda")
        rids = [f"{name}-b{k}-r{i}" for i in range(args.batch)]
        recorder.begin_batch(rids, [n_in] * args.batch)
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=0, stopping_criteria=StoppingCriteriaList([recorder]))  # fmt: skip
        recorder.end_batch([new_tokens] * args.batch)
        if rng.random() < 0.3:
            time.sleep(float(rng.uniform(0.0, 0.02)))
        k += 1
    torch.cuda.synchronize()
    return {"name": name, "window": (t0, time.monotonic()), "timings": clock.finish()}


def start_readers(fake: Any = None) -> tuple[Any, list[Any], list[Any]]:
    """The counter reader and the power reader processes (gpu_sensor_characterise.reader)."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs, pipes = [], []
    for i, kind in enumerate(("counter", "power")):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=sensor.reader, args=(kind, 0, fake, stop, child, 100 + i))
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    for parent in pipes:
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("a reader process did not start")
    return stop, procs, pipes


def stop_readers(stop: Any, procs: list[Any], pipes: list[Any]) -> dict[str, np.ndarray]:
    stop.set()
    raw: dict[str, np.ndarray] = {}
    for parent, proc in zip(pipes, procs, strict=True):
        raw.update(parent.recv())
        proc.join(timeout=10)
    return raw


def analyse(run: dict[str, Any], raw: dict[str, np.ndarray], gpu_name: str) -> dict[str, Any]:
    """Phase report (with the fine-signal estimate) and per-request energy of one window."""
    choice = choose_method(profile_for(gpu_name))
    counter = raw["energy_counter"]
    iv = counter_intervals(counter[:, 0], counter[:, 2], counter[:, 1])
    window, timings = run["window"], run["timings"]
    spans, steps = static_batch_spans(timings), static_batch_steps(timings)
    rep = phase_energy_report(iv, spans, window, delay_s=choice.counter_delay_s,
                              averaging_window_s=choice.counter_window_s,
                              sensor_profile=choice.profile)  # fmt: skip
    instant = raw.get("power_instant")
    if instant is not None and instant.shape[0] > 100:
        mid = instant[:, 0] + instant[:, 1] / 2
        rep.fine_signal = fine_signal_estimate(mid, instant[:, 2], spans, window,
                                               delay_s=choice.fine_delay_s,
                                               counter_energy_j=rep.counter_energy_j)  # fmt: skip
        if choice.fine_signal is None:
            rep.notes.append("fine signal computed for comparison; the profile does not trust it")
    out_tokens = {f"r{i}": t.output_tokens for i, t in enumerate(timings)}
    per = per_request_energy(iv, steps, window, output_tokens=out_tokens,
                             delay_s=choice.counter_delay_s,
                             averaging_window_s=choice.counter_window_s, keep_requests=False)  # fmt: skip
    return {"name": run["name"], "method_choice": choice.reason, "phases": rep.model_dump(mode="json"),
            "per_request": per.model_dump(mode="json")}  # fmt: skip


def agree(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """'ok' when two J/token estimates are within 10 % or their CIs overlap."""
    if not a or not b:
        return "not measured"
    close = abs(a["value"] - b["value"]) <= 0.1 * abs(b["value"])
    overlap = a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]
    return f"{'ok' if close or overlap else 'FAIL'} ({a['value']:.4g} vs {b['value']:.4g} J/token)"


def checks(results: dict[str, dict[str, Any]]) -> list[str]:
    """The acceptance lines (see the module docstring)."""

    def jpt(window: str, phase: str) -> dict[str, Any] | None:
        pe = results[window]["phases"]["phases"].get(phase) or {}
        return pe.get("j_per_token")

    lines = []
    for name, r in results.items():
        res, per = r["phases"].get("residual_pct"), r["per_request"]
        res_txt = (
            "not measured" if res is None else f"{res:+.2f} % ({'ok' if abs(res) < 1 else 'FAIL'})"
        )
        lines.append(
            f"{name}: phases vs counter {res_txt}; {r['phases'].get('not_measured') or ''}"
        )
        if per.get("sum_energy_j") is not None:
            gap = per["sum_energy_j"] - per["counter_energy_j"]
            lines.append(f"{name}: per-request sum - counter = {gap:+.3g} J; terms {per['terms']}")
    lines.append("prefill J/token mixed vs prefill_only: " + agree(jpt("mixed", "prefill"), jpt("prefill_only", "prefill")))  # fmt: skip
    lines.append("decode J/token mixed vs decode_heavy: " + agree(jpt("mixed", "decode"), jpt("decode_heavy", "decode")))  # fmt: skip
    return lines


def main() -> None:
    args = parse_args()
    nvml.init()
    gpu_name = nvml.name(nvml.handle_by_index(0))
    model = gpu_energy.build_llama()
    rng = np.random.default_rng(0)
    stop, procs, pipes = start_readers()
    runs = []
    try:
        for name, new in (("mixed", args.new_tokens), ("prefill_only", 1),
                          ("decode_heavy", 4 * args.new_tokens)):  # fmt: skip
            runs.append(run_window(model, args, name, new, rng))
            time.sleep(1.0)
    finally:
        raw = stop_readers(stop, procs, pipes)
    results = {r["name"]: analyse(r, raw, gpu_name) for r in runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phase_energy.json").write_text(
        json.dumps({"gpu": gpu_name, "results": results}, indent=1)
    )
    print("\n".join(checks(results)))
    print(f"written: {args.out}/phase_energy.json")


if __name__ == "__main__":
    main()
