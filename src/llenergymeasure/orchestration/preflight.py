"""Checks before an experiment runs; every problem is collected, then reported together.

Checks: backend installed (with the pip command), model resolvable (catalogue name, local
directory with config.json, or a Hub id that is cached or reachable), GPU visible when one is
asked for, no more GPUs asked for (``gpus:``, one per ``pytorch.num_processes``) than are
visible, the engine can run the architecture (vLLM head sizes), enough memory for the
weights + KV cache (free VRAM via NVML on GPU, available RAM via psutil on CPU), and the
dataset readable. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llenergymeasure.exceptions import ConfigError, MeterError, PreflightError

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig

_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


@dataclass
class PreflightReport:
    """What pre-flight found: the device it expects, the memory estimate, and warnings."""

    device: str  # "cpu" or "cuda"
    estimated_memory_bytes: float | None = None
    available_memory_bytes: float | None = None
    warnings: list[str] = field(default_factory=list)


def run_preflight(config: ExperimentConfig) -> PreflightReport:
    """Run every check; raise PreflightError listing all problems, else return a report."""
    problems: list[str] = []
    backend_problems = check_backend(config.backend)
    problems += backend_problems
    problems += check_model(config)
    gpu_count, gpu_problems = check_gpus(config)
    problems += gpu_problems
    device = "cpu" if config.device == "cpu" or not gpu_count else "cuda"
    report = PreflightReport(device=device)
    problems += check_memory(config, device, report)
    if not backend_problems:  # which engine build (CPU or CUDA) decides is known only then
        problems += check_engine_architecture(config, device, report)
    problems += check_dataset(config)
    if problems:
        raise PreflightError(problems)
    return report


def check_backend(name: str) -> list[str]:
    """The backend's packages are importable (message carries the pip command)."""
    from llenergymeasure.core.backends.registry import is_backend_available

    try:
        ok, reason = is_backend_available(name)
    except ConfigError as e:
        return [str(e)]
    return [] if ok else [f"backend {name!r} is not available: {reason}"]


def looks_like_path(model: str) -> bool:
    """True for strings that are meant as file-system paths (not Hub ids like org/name)."""
    return model.startswith(_PATH_PREFIXES) or os.path.isabs(model) or model.count("/") > 1


def check_model(config: ExperimentConfig) -> list[str]:
    """The model can be found: catalogue name, local config.json, cached or reachable Hub id."""
    from llenergymeasure.catalogue.architectures import is_catalogued, resolve_architecture

    model = config.model
    try:
        arch = resolve_architecture(model)
    except (ConfigError, ValueError) as e:
        return [str(e)]
    if arch is not None:
        if is_catalogued(model) and config.effective_weights == "pretrained":
            return [
                f"model {model!r} is a built-in architecture without weights: use "
                "weights: random, or give a Hub id / local directory for pretrained weights"
            ]
        return []
    if looks_like_path(model) or Path(model).expanduser().exists():
        return [f"model {model!r}: no such directory or config.json"]
    problems = _check_hub_model(model, config.effective_weights)
    close = _close_catalogue_name(model) if problems else None
    if close is not None:  # most likely a typo of a built-in name, not a Hub id
        return [
            f"model {model!r} is not a built-in architecture, a local directory or a cached "
            f"Hub id -> did you mean {close!r}? (built-in: {', '.join(_names())})"
        ]
    return problems


def _names() -> list[str]:
    from llenergymeasure.catalogue.architectures import list_architectures

    return list(list_architectures())


def _close_catalogue_name(model: str) -> str | None:
    """The built-in architecture name closest to a bare ``model`` name (a typo), if any."""
    import difflib

    if "/" in model:  # org/name: a Hub id, not a misspelt built-in name
        return None
    names = _names()
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(model.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


def _hub_cached_config(model: str) -> str | None:
    """Path of the Hub id's cached config.json, or None when not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        found = try_to_load_from_cache(model, "config.json")
        return found if isinstance(found, str) else None
    return None


def _check_hub_model(model: str, weights: str) -> list[str]:
    """A Hub id must be cached, or (pretrained only) the Hub must be reachable."""
    from llenergymeasure.core.models.loading import hub_reachable

    if _hub_cached_config(model) is not None:
        return []
    if weights == "random":
        return [
            f"model {model!r}: weights: random needs the architecture, but its config is not "
            "cached -> use a built-in architecture name or a local config.json"
        ]
    if hub_reachable():
        return []
    return [
        f"model {model!r} is not cached and the Hugging Face Hub cannot be reached "
        "(offline, or HF_HUB_OFFLINE=1) -> use weights: random with a built-in architecture, "
        "a local model directory, or download the model first while online"
    ]


def check_gpus(config: ExperimentConfig) -> tuple[int, list[str]]:
    """(visible GPU count, problems): a GPU must be visible if device: cuda or gpus is set."""
    from llenergymeasure.core.energy._nvml import nvml
    from llenergymeasure.core.energy.nvml import resolve_gpus

    wants_gpu = config.device == "cuda" or config.gpus is not None
    if config.device == "cpu":
        if config.gpus is not None:
            return 0, ["gpus is set but device is cpu: remove gpus or set device: cuda"]
        return 0, []
    try:
        nvml.init()
        try:
            count = len(resolve_gpus(None))  # CUDA_VISIBLE_DEVICES respected
        finally:
            nvml.shutdown()
    except (MeterError, ImportError, OSError) as e:
        if wants_gpu:
            return 0, [
                f"a GPU was asked for but NVML found none ({e}): check the driver, "
                "or use device: cpu"
            ]
        return 0, []
    if wants_gpu and count == 0:
        return 0, [
            "a GPU was asked for but none is visible -> check CUDA_VISIBLE_DEVICES, or use device: cpu"
        ]
    return count, _gpu_count_problems(config, count)


def _gpu_count_problems(config: ExperimentConfig, count: int) -> list[str]:
    """``gpus:`` and ``pytorch.num_processes`` against the ``count`` visible GPUs (> 0)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "all of this machine"
    problems: list[str] = []
    gpus = config.gpus or []
    if len(gpus) > count:
        problems.append(
            f"gpus lists {len(gpus)} GPU(s) but only {count} are visible ({where}) -> "
            "list fewer GPUs or make more visible"
        )
    bad = [i for i in gpus if i >= count]
    if bad:
        problems.append(
            f"gpus {bad} are not visible: {count} GPU(s) visible (indices 0-{count - 1})"
        )
    processes = config.pytorch.num_processes if config.pytorch is not None else None
    available = len(gpus) or count
    if config.backend == "pytorch" and processes is not None and processes > available:
        source = f"listed in gpus: {gpus}" if gpus else f"visible ({where})"
        problems.append(
            f"pytorch.num_processes is {processes} but only {available} GPU(s) are {source}: "
            "each process needs its own GPU -> lower num_processes, make more GPUs "
            "visible, or use device: cpu"
        )
    return problems


def estimate_memory_bytes(config: ExperimentConfig) -> tuple[float | None, list[str]]:
    """(bytes per GPU, notes) from ``core.memory.estimate_memory`` (None: shapes unknown)."""
    from llenergymeasure.core.memory import BYTES_PER_GB, estimate_memory

    est = estimate_memory(config)
    per_device_gb = est.per_gpu_gb if est.per_gpu_gb is not None else est.total_gb
    return (None if per_device_gb is None else per_device_gb * BYTES_PER_GB), list(est.notes)


def _free_bytes(config: ExperimentConfig, device: str) -> float | None:
    """Free VRAM of the first GPU used (NVML), or available RAM (psutil) on CPU."""
    if device == "cpu":
        import psutil

        return float(psutil.virtual_memory().available)
    from llenergymeasure.core.energy._nvml import nvml
    from llenergymeasure.core.energy.nvml import resolve_gpus

    with contextlib.suppress(MeterError, ImportError, OSError):  # NvmlError is a MeterError
        nvml.init()
        try:
            (gpu,) = resolve_gpus([(config.gpus or [0])[0]])  # CUDA ordinal -> NVML device
            used_mib, total_mib = nvml.memory_mb(nvml.handle_by_index(gpu.nvml_index))
        finally:
            nvml.shutdown()
        return (total_mib - used_mib) * 2**20
    return None


def check_memory(config: ExperimentConfig, device: str, report: PreflightReport) -> list[str]:
    """Estimated memory fits the free memory of the device (skipped when shapes unknown)."""
    need, notes = estimate_memory_bytes(config)
    report.warnings += notes
    if need is None:
        return []
    free = _free_bytes(config, device)
    report.estimated_memory_bytes, report.available_memory_bytes = need, free
    if free is None or need <= free:
        return []
    where = "free GPU memory" if device == "cuda" else "available RAM"
    return [
        f"not enough memory: the experiment needs about {need / 1e9:.1f} GB (weights + KV "
        f"cache + overhead, analytic) but only {free / 1e9:.1f} GB of {where} is free -> "
        "lower batch size / max tokens, use lower precision, or free memory"
    ]


def check_engine_architecture(
    config: ExperimentConfig, device: str, report: PreflightReport
) -> list[str]:
    """The engine can run the model's shapes (vLLM: head sizes its attention kernels take).

    vLLM's CPU attention rejects some head sizes only at the first forward, after a start of
    tens of seconds: caught here instead, with the reason. Unknown shapes (a Hub id that is
    not cached) are left to the engine.
    """
    if config.backend != "vllm":
        return []
    from llenergymeasure.catalogue.architectures import resolve_architecture
    from llenergymeasure.config import ssot
    from llenergymeasure.core.backends.vllm_support import vllm_platform

    try:
        arch = resolve_architecture(config.model)
    except (ConfigError, ValueError):
        return []  # check_model reports it
    if arch is None:
        return []
    platform = vllm_platform(device)
    note = ssot.vllm_head_size_note(arch.head_dim, platform)
    report.warnings += [note] if note else []
    problem = ssot.vllm_head_size_problem(arch.head_dim, platform)
    if problem is None:
        return []
    return [
        f"model {config.model!r}: {problem} -> use an architecture with a supported head "
        "size (e.g. tiny-llama-hd64 instead of tiny-llama)"
    ]


def check_dataset(config: ExperimentConfig) -> list[str]:
    """A dataset given as a file path exists, is a readable file, and is UTF-8 text."""
    dataset = config.dataset
    if not isinstance(dataset, str) or dataset == "builtin" or dataset.startswith("hf:"):
        return []
    path = Path(dataset).expanduser()
    if not path.exists():
        if looks_like_path(dataset) or path.suffix in {".jsonl", ".json", ".csv", ".txt"}:
            return [f"dataset {dataset!r}: no such file -> check the path (or use 'builtin')"]
        return []  # a dataset name: the loader resolves it and says if it cannot
    if path.is_dir():
        return [f"dataset {dataset!r} is a directory -> point to a prompt file inside it"]
    if not path.is_file() or not os.access(path, os.R_OK):
        return [f"dataset {dataset!r} is not a readable file -> check its permissions"]
    problem = text_file_problem(path)
    return [f"dataset {dataset!r} {problem}"] if problem else []


def text_file_problem(path: Path, chunk_bytes: int = 1 << 20) -> str | None:
    """Why ``path`` is not UTF-8 text (binary, or the first undecodable byte), or None.

    Read in chunks with an incremental decoder: bounded memory on a huge file."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(chunk_bytes):
                if b"\0" in chunk:
                    at = offset + chunk.index(b"\0")
                    return (
                        f"looks binary (a NUL byte at offset {at:,}) -> give a text file: "
                        "JSONL, JSON, CSV or one prompt per line"
                    )
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        return (
            f"is not UTF-8 text (byte 0x{e.object[e.start]:02x} near offset "
            f"{offset + e.start:,}) -> save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    except OSError as e:
        return f"cannot be read ({e.strerror or e}) -> check the file"
    return None
