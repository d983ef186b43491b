"""Environment snapshot: the hardware and software a result was measured on."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GpuInfo(BaseModel):
    """One visible GPU, as NVML describes it."""

    model_config = ConfigDict(extra="forbid")

    nvml_index: int
    name: str
    uuid: str
    memory_total_mb: float | None = None
    power_limit_w: float | None = None
    persistence_mode: bool | None = None
    mig_enabled: bool | None = None
    energy_counter_supported: bool | None = None


class EnvironmentSnapshot(BaseModel):
    """Where and with what a measurement ran. ``None`` means "could not be determined"."""

    model_config = ConfigDict(extra="forbid")

    collected_at_unix_s: float
    gpus: list[GpuInfo] = Field(default_factory=list)
    gpu_count: int = 0
    nvml_available: bool = False
    nvml_error: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # highest CUDA the driver supports (NVML)
    torch_cuda_version: str | None = None  # only if torch was already imported
    cuda_visible_devices: str | None = None
    cpu_model: str | None = None
    cpu_physical_cores: int | None = None
    cpu_logical_cores: int | None = None
    ram_total_gb: float | None = None
    os: str
    kernel: str | None = None
    python_version: str
    library_versions: dict[str, str | None] = Field(default_factory=dict)
    framework_env: dict[str, str] = Field(
        default_factory=dict,
        description="environment variables that change what the frameworks run (kernels, "
        "allocator, threads: TORCH_*, CUDA_*, VLLM_*, ...) as set when the experiment ran",
    )
    in_container: bool = False
    container_evidence: str | None = None


class Placement(BaseModel):
    """Where an experiment ran: the node, the GPUs it was given, and the batch job, if any.

    Read from the process environment when the experiment starts. Under Slurm,
    ``cuda_visible_devices`` is what Slurm set for the job (renumbered from 0 where the
    cluster isolates devices with cgroups), ``job_gpus`` the node's own GPU indices
    (``SLURM_JOB_GPUS``); GPU UUIDs, where NVML is available, are in the environment
    snapshot.
    """

    model_config = ConfigDict(extra="forbid")

    host: str
    cuda_visible_devices: str | None = None
    scheduler: str | None = Field(None, description="slurm when run inside a Slurm job")
    job_id: str | None = None
    job_gpus: str | None = Field(None, description="SLURM_JOB_GPUS: the node's GPU indices")
    restart_count: int | None = Field(None, description="SLURM_RESTART_COUNT (requeues)")
