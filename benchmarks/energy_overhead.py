"""Meter overhead on real ``generate`` loops: throughput with the energy session on / off.

Used by ``gpu_energy.py`` (section 2). For each (cache mode, batch size) of a random-weight
Llama-3.2-1B shape (bf16, 64 in / 64 out, fixed output length), the model is loaded through the
tool's own pytorch backend, and a plain ``model.generate`` call over one prepared batch is timed
in blocks:

- **on** block: an ``EnergySession`` (NVML meter + telemetry sampler process at 100 ms) is
  started, a window is opened, K timed calls run, the window is closed, the session stopped;
- **off** block: the same K timed calls with nothing running.

Both arms make one untimed call right before timing (neither starts from an idle GPU). Blocks
come in pairs whose order alternates (on/off, off/on, ...), so a slow drift of the machine's
speed cancels; each pair gives a ratio (on tokens/s / off tokens/s). Reported per setting: the
median ratio with a bootstrap 95% CI of that median, the pooled ratio of median per-call
throughputs, and what explains the noise: the main thread's CPU time per call (eager decoding
is CPU-bound) and the steal time the hypervisor took during each block.

torch is imported inside functions: the sampler process is started with ``spawn``, which
re-imports the main script (and so this module) in its process.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench_stats import median_ci

from llenergymeasure.core.energy import EnergySession
from llenergymeasure.core.energy.sampler import NvmlSampleSource, ReadFn

TARGET = 0.99


@dataclass
class Block:
    """K timed calls of one arm."""

    metered: bool
    call_tok_s: list[float] = field(default_factory=list)
    call_cpu_frac: list[float] = field(default_factory=list)  # main-thread CPU s / wall s
    tokens: int = 0
    wall_s: float = 0.0
    steal_s: float = 0.0
    window_edges_ms: float | None = None
    session_start_stop_s: float | None = None  # untimed: sampler spawn + NVML init, and stop
    gc_s: float = 0.0  # time in Python's garbage collector during the timed calls
    gc_full: int = 0  # generation-2 collections during the timed calls
    sampler_cpu_frac: float | None = None  # sampler process CPU s / timed wall s (10 ms ticks)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s


@dataclass
class Workload:
    """One setting's model and its generate call."""

    mode: str
    batch: int
    model: Any
    input_ids: Any
    attention_mask: Any
    generation_config: Any
    new_tokens: int
    backend: Any

    def call(self) -> int:
        """One greedy generate of the batch; returns output tokens."""
        import torch

        with torch.inference_mode():
            out = self.model.generate(
                input_ids=self.input_ids,
                attention_mask=self.attention_mask,
                generation_config=self.generation_config,
            )
        return int((out.shape[1] - self.input_ids.shape[1]) * self.batch)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def steal_s() -> float:
    """Cumulative steal time of all CPUs (s), from /proc/stat; 0 where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def sampler_cpu_s(session: EnergySession | None) -> float | None:
    """CPU time (user + system) the sampler process has used so far, from /proc."""
    process = getattr(session.sampler, "_process", None) if session else None
    if process is None or process.pid is None:
        return None
    try:
        with open(f"/proc/{process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def build_workload(
    mode: str, batch: int, in_tokens: int, new_tokens: int, model: str = "llama-3.2-1b"
) -> Workload:
    """Load the model shape via the pytorch backend (CUDA when there is one, for a CPU smoke
    run otherwise); one batch of synthetic prompts."""
    import torch
    from transformers import GenerationConfig

    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.backends.pytorch import PyTorchBackend
    from llenergymeasure.datasets.loader import load_prompts

    pytorch: dict[str, Any] = {"batch_size": batch}
    if mode == "static":
        pytorch["cache_implementation"] = "static"
    config = ExperimentConfig(
        model=model,
        weights="random",
        precision="bf16" if torch.cuda.is_available() else "fp32",
        device="cuda" if torch.cuda.is_available() else "cpu",
        max_input_tokens=in_tokens,
        max_output_tokens=new_tokens,
        pytorch=pytorch,
    )
    prompts = list(
        load_prompts({"n": batch, "input_len": in_tokens, "output_len": new_tokens, "seed": 0})
    )
    backend = PyTorchBackend()
    backend.initialize(config, prompts)
    first = backend.tokenize(prompts).batches[0]
    tok = backend._require_tokenizer()
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if mode == "static":
        gen_kwargs["cache_implementation"] = "static"
    return Workload(
        mode=mode,
        batch=batch,
        model=backend._require_model(),
        input_ids=first.payload.input_ids,
        attention_mask=first.payload.attention_mask,
        generation_config=GenerationConfig(**gen_kwargs),
        new_tokens=new_tokens,
        backend=backend,
    )


def run_block(
    work: Workload,
    metered: bool,
    calls: int,
    interval_ms: float,
    pin_cpu: int | None = None,
    fields: tuple[str, ...] | None = None,
) -> Block:
    """One arm: (session on) one untimed call, then ``calls`` individually timed calls.

    With ``pin_cpu`` the main thread runs on that CPU and the sampler process (which would
    inherit the mask) is started on all the others.
    """
    block = Block(metered=metered)
    session = None
    t_start = time.perf_counter()
    if metered:
        session = new_session(interval_ms, fields)
        with _affinity_without(pin_cpu):
            session.start()
        block.session_start_stop_s = time.perf_counter() - t_start
    try:
        work.call()
        sync()
        if session:
            e0 = time.perf_counter()
            session.begin_window("overhead", sync=sync)
            edges = time.perf_counter() - e0
        steal0, sampler0 = steal_s(), sampler_cpu_s(session)
        GC_CLOCK.reset()
        for _ in range(calls):
            c0, w0 = time.thread_time(), time.perf_counter()
            tokens = work.call()
            sync()
            wall = time.perf_counter() - w0
            block.call_tok_s.append(tokens / wall)
            block.call_cpu_frac.append((time.thread_time() - c0) / wall)
            block.tokens += tokens
            block.wall_s += wall
        block.steal_s = steal_s() - steal0
        block.gc_s, block.gc_full = GC_CLOCK.total_s, GC_CLOCK.full
        sampler1 = sampler_cpu_s(session)
        if sampler0 is not None and sampler1 is not None:
            block.sampler_cpu_frac = (sampler1 - sampler0) / block.wall_s
        if session:
            e1 = time.perf_counter()
            session.end_window("overhead", sync=sync)
            block.window_edges_ms = 1000.0 * (edges + time.perf_counter() - e1)
    finally:
        if session:
            t_stop = time.perf_counter()
            session.stop()
            block.session_start_stop_s = (block.session_start_stop_s or 0.0) + (
                time.perf_counter() - t_stop
            )
    return block


class _GcClock:
    """Time spent in Python's garbage collector (gc.callbacks), and full collections."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.full = 0
        self._t0: float | None = None
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.total_s, self.full = 0.0, 0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.total_s += time.perf_counter() - self._t0
            self.full += info.get("generation") == 2
            self._t0 = None


GC_CLOCK = _GcClock()


class _affinity_without:
    """Context: the calling thread may run on every CPU but ``cpu`` (no-op for None)."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu

    def __enter__(self) -> None:
        if self.cpu is not None:
            self.saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {self.cpu})

    def __exit__(self, *exc: object) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, self.saved)


def apply_cpu_settings(args: Any) -> dict[str, Any]:
    """--torch-threads and --pin-cpu (main thread to one CPU); returns what was set."""
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    return {
        "torch_threads": torch.get_num_threads(),
        "main_thread_affinity": sorted(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
    }


@dataclasses.dataclass(frozen=True)
class FieldsSource(NvmlSampleSource):
    """The tool's NVML sample source restricted to some fields (diagnostic variant)."""

    fields: tuple[str, ...] = ("power_w",)

    def open(self) -> ReadFn:
        read = super().open()
        reader = read.__self__  # type: ignore[attr-defined]
        reader.FIELDS = {  # fields not asked for read as None, like unsupported ones
            k: (f if k in self.fields else _not_read) for k, f in type(reader).FIELDS.items()
        }
        return read


def _not_read(_handle: Any) -> None:
    return None


class FieldsSession(EnergySession):
    """EnergySession whose sampler reads only ``fields``."""

    def __init__(self, fields: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fields = fields

    def _sample_source(self, plan: Any) -> FieldsSource:
        base = super()._sample_source(plan)
        return FieldsSource(base.nvml_indices, base.fake, self.fields)


def new_session(interval_ms: float, fields: tuple[str, ...] | None = None) -> EnergySession:
    """NVML meter + sampler on GPU 0 (optionally sampling only ``fields``); on a machine
    without CUDA (smoke run) whatever is there."""
    import torch

    if not torch.cuda.is_available():
        return EnergySession("auto", sample_interval_ms=interval_ms)
    if fields:
        return FieldsSession(
            fields, energy_backend="nvml", gpu_indices=[0], sample_interval_ms=interval_ms
        )
    return EnergySession("nvml", gpu_indices=[0], sample_interval_ms=interval_ms)


def calls_per_block(work: Workload, min_block_s: float) -> tuple[int, float]:
    """Warm up (static cache compiles here), then size K so that a block lasts min_block_s."""
    for _ in range(3):
        work.call()
    sync()
    t0 = time.perf_counter()
    work.call()
    sync()
    one = time.perf_counter() - t0
    return max(1, round(min_block_s / one)), one


def measure_setting(
    mode: str, batch: int, pairs: int, min_block_s: float, args: Any
) -> dict[str, Any]:
    """All pairs of one setting, with their summary: at least ``pairs`` pairs, and more while
    fewer than ``args.setting_s`` seconds have passed since the first one started (the
    statistical power depends on the number of timed calls, not on how they are grouped)."""
    t0 = time.perf_counter()
    work = build_workload(mode, batch, args.in_tokens, args.new_tokens, args.model)
    k, one_call_s = calls_per_block(work, min_block_s)
    warm_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    t_pairs = time.perf_counter()
    setting_s = getattr(args, "setting_s", 0.0) or 0.0
    for i in itertools.count():
        if i >= pairs and time.perf_counter() - t_pairs >= setting_s:
            break
        order = (True, False) if i % 2 == 0 else (False, True)
        blocks = {m: run_block(work, m, k, args.sample_interval_ms, args.pin_cpu) for m in order}
        on, off = blocks[True], blocks[False]
        rows.append({"ratio": on.tok_s / off.tok_s, "on": asdict(on), "off": asdict(off)})
        print(
            f"  {mode:6} b{batch:<3} pair {i:2d}: on {on.tok_s:9.1f}  off {off.tok_s:9.1f} tok/s"
            f"  ratio {rows[-1]['ratio']:.4f}  steal {on.steal_s + off.steal_s:.2f} s",
            flush=True,
        )
    work.backend.cleanup()
    summary = summarise(mode, batch, k, one_call_s, warm_s, rows)
    summary["pairs_s"] = time.perf_counter() - t_pairs
    return summary


def summarise(
    mode: str, batch: int, k: int, one_call_s: float, warm_s: float, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Median ratio + CI, pooled per-call ratio, noise diagnostics."""
    ratios = [r["ratio"] for r in rows]
    on_calls = [x for r in rows for x in r["on"]["call_tok_s"]]
    off_calls = [x for r in rows for x in r["off"]["call_tok_s"]]
    low, high = median_ci(ratios)
    median = statistics.median(ratios)
    off_blocks = [r["off"]["tokens"] / r["off"]["wall_s"] for r in rows]
    return {
        "mode": mode,
        "batch": batch,
        "calls_per_block": k,
        "one_call_s": one_call_s,
        "warmup_s": warm_s,
        "pairs": rows,
        "median_ratio": median,
        "median_ratio_ci95": [low, high],
        "pooled_call_ratio": statistics.median(on_calls) / statistics.median(off_calls),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "off_block_cv": statistics.pstdev(off_blocks) / statistics.fmean(off_blocks),
        "main_thread_cpu_frac": statistics.median(
            x for r in rows for arm in ("on", "off") for x in r[arm]["call_cpu_frac"]
        ),
        "sampler_cpu_frac": _pooled_sampler_cpu(rows),
        "steal_s_total": sum(r["on"]["steal_s"] + r["off"]["steal_s"] for r in rows),
        "median_window_edges_ms": statistics.median(
            r["on"]["window_edges_ms"] for r in rows if r["on"]["window_edges_ms"] is not None
        ),
        "gc_s_on_off": [
            sum(r["on"].get("gc_s", 0.0) for r in rows),
            sum(r["off"].get("gc_s", 0.0) for r in rows),
        ],
        "gc_full_on_off": [
            sum(r["on"].get("gc_full", 0) for r in rows),
            sum(r["off"].get("gc_full", 0) for r in rows),
        ],
        "median_session_start_stop_s": statistics.median(
            r["on"]["session_start_stop_s"] or 0.0 for r in rows
        ),
        "target_met": median >= TARGET,
    }


def _pooled_sampler_cpu(rows: list[dict[str, Any]]) -> float | None:
    """Sampler CPU s / timed wall s over every on block (ticks are 10 ms: pool them)."""
    on = [r["on"] for r in rows if r["on"]["sampler_cpu_frac"] is not None]
    wall = sum(b["wall_s"] for b in on)
    return sum(b["sampler_cpu_frac"] * b["wall_s"] for b in on) / wall if on else None


def run(args: Any) -> dict[str, Any]:
    """Every (mode, batch) setting; keyed ``<mode>_b<batch>``."""
    out: dict[str, Any] = {"cpu_settings": apply_cpu_settings(args)}
    for mode in args.modes:
        for batch in args.batches:
            out[f"{mode}_b{batch}"] = measure_setting(
                mode, batch, args.pairs, args.min_block_s, args
            )
    return out


def table(results: dict[str, Any]) -> list[str]:
    """Lines of the summary table."""
    lines = [
        "overhead (session on / off)  pairs  median  95% CI          pooled  off CV  cpu  target>=0.99  edges ms"
        "  sampler cpu  gc ms on/off"
    ]
    for name, r in results.items():
        if name == "cpu_settings":
            continue
        lo, hi = r["median_ratio_ci95"]
        lines.append(
            f"{name:<28} {len(r['pairs']):5d}  {r['median_ratio']:.4f}  [{lo:.4f},{hi:.4f}]  "
            f"{r['pooled_call_ratio']:.4f}  {100 * r['off_block_cv']:4.1f}%  "
            f"{r['main_thread_cpu_frac']:.2f}  {'met' if r['target_met'] else 'NOT met':<12}  "
            f"{r['median_window_edges_ms']:8.1f}  "
            + (f"{100 * r['sampler_cpu_frac']:.2f}%" if r["sampler_cpu_frac"] is not None else "-")
            + "        {:.0f}/{:.0f}".format(*(1000 * x for x in r.get("gc_s_on_off", (0, 0))))
        )
    return lines
