"""Configuration models: ExperimentConfig (what to measure) and StudyConfig (a sweep of them).

Validators are pure: no environment reads, no network, no writes. Cross-field rules that
depend on what a backend supports read `config/ssot.py`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llenergymeasure.config import ssot
from llenergymeasure.config.backend_configs import PyTorchConfig, TensorRTConfig, VLLMConfig
from llenergymeasure.config.ssot import (
    Backend,
    DecodingStrategy,
    EnergyBackendName,
    Executor,
    PhaseEnergyMode,
    Precision,
)

MAX_N = 1_000_000  # prompts per experiment; more is almost certainly a typo
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_safe_name(value: str, what: str) -> str:
    """Reject names that could escape the results directory or break file systems."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} is not a safe directory name: use 1-100 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (no '/', no '..')"
        )
    return value


def check_relative_subpath(value: str, what: str) -> str:
    """A path that must stay inside the results directory."""
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", value) or ".." in parts:
        raise ValueError(
            f"{what} {value!r} would escape the results directory: give a relative path "
            "without '..' (or choose another results directory with --output)"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticDatasetConfig(_Model):
    """Synthetic prompts with exact token lengths."""

    n: int | None = Field(None, ge=1, le=MAX_N, description="Prompts; default: the experiment's n.")
    input_len: int = Field(..., ge=1, le=131_072, description="Exact input tokens per prompt.")
    output_len: int = Field(..., ge=1, le=131_072, description="Output tokens per prompt.")
    seed: int = Field(0, description="Seed for the random token ids.")


class DecoderConfig(_Model):
    """Decoding settings shared by all backends."""

    strategy: DecodingStrategy = "greedy"
    temperature: float | None = Field(None, ge=0.0, le=10.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    num_beams: int | None = Field(None, ge=1, le=64)
    min_new_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool = Field(
        True, description="Generate exactly max_output_tokens (fixed output length)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DecoderConfig:
        sampling_knobs = [
            k for k in ("temperature", "top_p", "top_k") if getattr(self, k) is not None
        ]
        if self.strategy == "greedy" and sampling_knobs:
            raise ValueError(
                f"{', '.join(sampling_knobs)} only apply to sampling: set strategy: sample"
            )
        if self.num_beams not in (None, 1) and self.strategy != "beam_search":
            raise ValueError("num_beams > 1 needs strategy: beam_search")
        return self


class WarmupConfig(_Model):
    """Warm-up before the measurement window."""

    enabled: bool = True
    n_warmup: int = Field(3, ge=0, le=1000, description="Warm-up runs (fixed mode).")
    convergence: bool = Field(
        False,
        description="Stop as soon as the latencies settle: the CV of the last `window` calls "
        "after the first (at least 2 of them) < cv_threshold.",
    )
    cv_threshold: float = Field(0.05, gt=0.0, le=1.0)
    window: int = Field(
        5, ge=2, le=100, description="Most calls (after the first) the CV is computed over."
    )
    max_warmup: int = Field(50, ge=1, le=10_000)
    thermal_floor_s: float = Field(
        0.0, ge=0.0, le=3600.0, description="Minimum seconds of warm-up (thermal floor)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> WarmupConfig:
        if self.convergence and self.max_warmup < self.window:
            raise ValueError("max_warmup must be >= window in convergence mode")
        return self


class BaselineConfig(_Model):
    """Idle-power baseline measured before the experiment."""

    enabled: bool = True
    duration_s: float = Field(5.0, gt=0.0, le=600.0)
    cache_ttl_s: float = Field(3600.0, ge=0.0, le=7 * 86400.0)


class TelemetryConfig(_Model):
    """Power/thermal timeline sampled in a separate process."""

    enabled: bool = True
    interval_ms: int = Field(100, ge=10, le=10_000)
    save_timeseries: bool = True
    phase_energy: PhaseEnergyMode | None = Field(
        None,
        description="Energy by phase and per request from a fast energy-counter trace read "
        "during the window (docs/measurement.md section 14). auto (the default, null): on for "
        "GPU models whose sensor profile shows the trace is free; on: always (single-GPU, "
        "single-process runs); off: never. Only explicit choices enter the config hash.",
    )


class ExperimentConfig(_Model):
    """One experiment: a model under one deployment configuration (docs/configuration.md)."""

    name: str | None = Field(None, description="Experiment name (results directory prefix).")
    model: str = Field(
        ..., min_length=1, description="HF id, local path, or a built-in architecture name."
    )
    weights: Literal["pretrained", "random"] | None = Field(
        None,
        description="random: architecture only, random weights (no download). "
        "Default: random for built-in architecture names, pretrained otherwise.",
    )
    backend: Backend = "pytorch"
    precision: Precision = "bf16"
    dataset: str | SyntheticDatasetConfig = Field(
        "builtin", description="builtin, a JSONL/CSV/text path, hf:<name>, or synthetic {...}."
    )
    n: int = Field(100, ge=1, le=MAX_N, description="Number of prompts measured.")
    random_seed: int = 42
    max_input_tokens: int = Field(512, ge=1, le=131_072)
    max_output_tokens: int = Field(128, ge=1, le=131_072)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    energy_backend: EnergyBackendName = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    gpus: list[int] | None = Field(None, description="GPU indices to use (default: all visible).")
    carbon_intensity_gco2_kwh: float | None = Field(None, ge=0.0, le=2000.0)
    datacenter_pue: float | None = Field(None, ge=1.0, le=3.0)
    output_dir: str | None = Field(
        None, description="Sub-directory of the results directory for this run."
    )
    pytorch: PyTorchConfig | None = None
    vllm: VLLMConfig | None = None
    tensorrt: TensorRTConfig | None = None
    passthrough_kwargs: dict[str, Any] | None = Field(
        None, description="Extra keyword arguments passed to the backend unchanged."
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        return None if v is None else check_safe_name(v, "name")

    @field_validator("output_dir")
    @classmethod
    def _safe_output(cls, v: str | None) -> str | None:
        return None if v is None else check_relative_subpath(v, "output_dir")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError("gpus must be a non-empty list of distinct indices >= 0")
        return v

    @model_validator(mode="after")
    def _backend_rules(self) -> ExperimentConfig:
        problems = cross_field_problems(self.model_dump(exclude_none=True))
        if problems:
            raise ValueError(problems[0][1])
        return self

    @property
    def effective_weights(self) -> str:
        """`weights` with the default resolved (random for catalogue names)."""
        if self.weights is not None:
            return self.weights
        from llenergymeasure.catalogue.architectures import is_catalogue_name

        return "random" if is_catalogue_name(self.model) else "pretrained"

    @property
    def backend_section(self) -> PyTorchConfig | VLLMConfig | TensorRTConfig:
        """The backend's section, or an all-default one."""
        given: dict[str, PyTorchConfig | VLLMConfig | TensorRTConfig | None] = {
            "pytorch": self.pytorch,
            "vllm": self.vllm,
            "tensorrt": self.tensorrt,
        }
        section = given[self.backend]
        if section is not None:
            return section
        defaults: dict[str, type[PyTorchConfig | VLLMConfig | TensorRTConfig]] = {
            "pytorch": PyTorchConfig,
            "vllm": VLLMConfig,
            "tensorrt": TensorRTConfig,
        }
        return defaults[self.backend]()


def cross_field_problems(data: Any) -> list[tuple[str, str]]:
    """Rules across fields of an experiment, as (field path, message) pairs.

    Pure and tolerant of raw, unvalidated input, so the loader can report these together
    with field-level errors (pydantic runs model validators only once fields are valid).
    Messages start with the field they concern.
    """
    if not isinstance(data, dict):
        return []
    backend = data.get("backend", "pytorch")
    if backend not in ssot.BACKENDS:
        return []
    problems: list[tuple[str, str]] = []
    for section in ssot.BACKENDS:
        if section != backend and data.get(section) is not None:
            problems.append(
                (
                    section,
                    f"a '{section}:' section was given but backend is {backend!r}: "
                    f"remove the section or set backend: {section}",
                )
            )
    precision = data.get("precision", "bf16")
    supported = ssot.supported_precisions(backend)
    if precision in ssot.PRECISIONS and precision not in supported:
        problems.append(
            (
                "precision",
                f"precision {precision!r} is not supported by the {backend} backend: "
                f"use one of {', '.join(supported)}",
            )
        )
    decoder = data.get("decoder")
    strategy = decoder.get("strategy", "greedy") if isinstance(decoder, dict) else "greedy"
    strategies = ssot.supported_decoding(backend)
    if strategy in ssot.DECODING_STRATEGIES and strategy not in strategies:
        problems.append(
            (
                "decoder.strategy",
                f"decoder.strategy {strategy!r} is not supported by "
                f"{backend}: use one of {', '.join(strategies)}",
            )
        )
    pytorch_section = data.get("pytorch")
    if backend == "pytorch" and isinstance(pytorch_section, dict):
        conflict = {"int8": "load_in_4bit", "int4": "load_in_8bit"}.get(precision)
        if conflict and pytorch_section.get(conflict):
            problems.append(
                (
                    "precision",
                    f"precision {precision} conflicts with the pytorch load_in_* flag",
                )
            )
        problems += _process_problems(pytorch_section, data.get("n", 100))
    return problems


def _process_problems(section: dict[str, Any], n: Any) -> list[tuple[str, str]]:
    """pytorch.num_processes against device_map and the number of prompts."""
    processes = section.get("num_processes")
    if not isinstance(processes, int) or processes <= 1:
        return []
    problems: list[tuple[str, str]] = []
    if section.get("device_map") is not None:
        problems.append(
            (
                "pytorch.num_processes",
                f"pytorch.num_processes {processes} and pytorch.device_map cannot be combined "
                "(data parallel puts one whole model on each GPU): drop one of them",
            )
        )
    if isinstance(n, int) and processes > n:
        problems.append(
            (
                "pytorch.num_processes",
                f"pytorch.num_processes {processes} is more than the {n} prompts (n): every "
                "process needs at least one prompt",
            )
        )
    return problems


class ExecutionConfig(_Model):
    """How a study runs its experiments."""

    executor: Executor = Field(
        "local",
        description="local: one subprocess per experiment on this machine; slurm: one Slurm "
        "job per experiment (settings in `slurm:`)",
    )
    n_cycles: int = Field(1, ge=1, le=1000)
    order: Literal["interleaved", "shuffled", "grouped"] = "interleaved"
    shuffle_seed: int | None = Field(None, description="Seed for shuffled order (recorded).")
    config_gap_seconds: float = Field(0.0, ge=0.0, le=3600.0)
    cycle_gap_seconds: float = Field(0.0, ge=0.0, le=3600.0)
    experiment_timeout_seconds: float = Field(3600.0, gt=0.0, le=7 * 86400.0)
    max_consecutive_failures: int = Field(3, ge=1, le=10_000)


#: sbatch options the `slurm:` section (or submitit) sets itself -> the field to use instead
#: (None: set by llem/submitit, not configurable). Refused in ``slurm.extra_sbatch``.
SLURM_MANAGED_OPTIONS: dict[str, str | None] = {
    "partition": "slurm.partition",
    "account": "slurm.account",
    "qos": "slurm.qos",
    "time": "slurm.time_limit_min",
    "gpus": "slurm.gpus_per_job",
    "gpus-per-node": "slurm.gpus_per_job",
    "gpus-per-task": "slurm.gpus_per_job",
    "gres": "slurm.gpus_per_job",
    "cpus-per-task": "slurm.cpus_per_job",
    "mem": "slurm.mem_gb",
    "signal": "slurm.signal_delay_s",
    "job-name": None,
    "output": None,
    "error": None,
    "open-mode": None,
    "array": None,
    "wrap": None,
    "parsable": None,
    "nodes": None,
    "ntasks": None,
    "ntasks-per-node": None,
}
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


class SlurmConfig(_Model):
    """How each experiment of a study becomes a Slurm job (``execution.executor: slurm``).

    One experiment = one job (one node, one task) with its own GPUs. Defaults come from the
    user config's ``slurm:`` section, then the study's ``slurm:``, then overrides.
    """

    partition: str | None = Field(None, description="--partition (None: the cluster default)")
    account: str | None = Field(None, description="--account")
    qos: str | None = Field(None, description="--qos")
    time_limit_min: int | None = Field(
        None,
        ge=1,
        le=30 * 24 * 60,
        description="--time of each job, minutes. None: execution.experiment_timeout_seconds "
        "plus signal_delay_s, rounded up. submitit stops the job signal_delay_s before it.",
    )
    gpus_per_job: int = Field(1, ge=0, le=64, description="--gpus-per-node of each job")
    cpus_per_job: int = Field(4, ge=1, le=4096, description="--cpus-per-task of each job")
    mem_gb: float | None = Field(
        None, gt=0.0, le=65536.0, description="--mem of each job, GB (None: cluster default)"
    )
    max_parallel: int = Field(
        1,
        ge=1,
        le=1024,
        description="experiments running at once, each on its own GPUs (1: one after another)",
    )
    extra_sbatch: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="more sbatch options, verbatim: {constraint: h100, exclusive: true}",
    )
    setup: list[str] = Field(
        default_factory=list,
        description="shell lines run in each job before the experiment (module load ...)",
    )
    signal_delay_s: int = Field(
        90, ge=10, le=3600, description="submitit's USR2 this long before the time limit"
    )
    poll_interval_s: float = Field(
        10.0, ge=0.5, le=600.0, description="how often the study process asks sacct"
    )
    max_pending_hours: float = Field(
        72.0, gt=0.0, le=720.0, description="a job still queued after this long is cancelled"
    )
    python: str | None = Field(
        None, description="interpreter on the compute nodes (None: the one running llem)"
    )

    @field_validator("extra_sbatch")
    @classmethod
    def _extra(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        out: dict[str, str | int | bool] = {}
        for raw_key, value in v.items():
            key = raw_key.lstrip("-").replace("_", "-")
            if not _SBATCH_KEY.match(key):
                raise ValueError(f"extra_sbatch key {raw_key!r} is not an sbatch option name")
            if key in SLURM_MANAGED_OPTIONS:
                instead = SLURM_MANAGED_OPTIONS[key]
                fix = f"set {instead} instead" if instead else "llem sets it for every job"
                raise ValueError(f"extra_sbatch.{raw_key} is not allowed: {fix}")
            if value is False:
                raise ValueError(f"extra_sbatch.{raw_key}: false is not an option: leave it out")
            out[key] = value
        return out

    def effective_time_limit_min(self, experiment_timeout_s: float) -> int:
        """``--time``: the given limit, or the experiment timeout plus the USR2 margin."""
        if self.time_limit_min is not None:
            return self.time_limit_min
        return max(1, math.ceil((experiment_timeout_s + self.signal_delay_s) / 60.0))


class StudyConfig(_Model):
    """A sweep of experiments over repeated cycles (docs/configuration.md, Study).

    ``base`` holds fields shared by every experiment; ``sweep`` maps dotted field paths to
    lists (a key prefixed ``<backend>.`` applies only to that backend); ``experiments``
    lists explicit experiments. Expansion into ExperimentConfigs is `study/grid.py`'s job:
    invalid points are skipped with reasons rather than failing the study.
    """

    study_name: str = Field("study", description="Study name (results directory prefix).")
    base: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    experiments: list[dict[str, Any]] = Field(default_factory=list)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    output_dir: str | None = None

    @field_validator("study_name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_safe_name(v, "study_name")

    @field_validator("output_dir")
    @classmethod
    def _safe_output(cls, v: str | None) -> str | None:
        return None if v is None else check_relative_subpath(v, "output_dir")

    @field_validator("sweep")
    @classmethod
    def _sweep_lists(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep.{key} is an empty list: give at least one value")
        return v

    @model_validator(mode="after")
    def _something_to_run(self) -> StudyConfig:
        if not self.sweep and not self.experiments and not self.base:
            raise ValueError("a study needs `sweep:`, `experiments:` or `base:`")
        slurm = self.slurm
        if self.execution.executor == "slurm" and slurm.max_parallel > 1 and not slurm.gpus_per_job:
            raise ValueError(
                "slurm.max_parallel > 1 needs slurm.gpus_per_job >= 1: Slurm's GPU allocation "
                "is what keeps two experiments off one GPU"
            )
        return self
