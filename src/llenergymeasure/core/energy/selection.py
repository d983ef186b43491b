"""Which meters measure: ``energy_backend: auto | nvml | zeus | codecarbon | rapl | null``.

``auto`` (the default) decides, and ``MeterSelection.reason`` records why:
  - GPU: the NVML meter (counter, polled fallback) if NVML initialises and at least one GPU
    is visible; otherwise GPU energy is "not measured" with NVML's reason.
  - CPU package + DRAM: RAPL if its counters are readable.
  - If RAPL is unreadable: the CPU *estimate* (TDP x utilisation, labelled ``estimate``) only
    when no GPU is measured — i.e. a CPU-only run, where the CPU does the work and an
    order-of-magnitude figure beats none. When GPUs are measured, CPU energy is left
    "not measured" rather than mixing a guess into a GPU experiment.

An explicitly requested backend that cannot work raises ``MeterError`` with the fix.
Zeus and CodeCarbon own NVML when chosen: the NVML meter and sampler are not started.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from llenergymeasure.config.ssot import ENERGY_BACKENDS
from llenergymeasure.core.energy._nvml import NvmlError, NvmlNotSupported, nvml
from llenergymeasure.core.energy.codecarbon import INSTALL_HINT as CODECARBON_HINT
from llenergymeasure.core.energy.codecarbon import CodeCarbonMeter, codecarbon_available
from llenergymeasure.core.energy.estimate import EstimateMeter
from llenergymeasure.core.energy.null import NullMeter
from llenergymeasure.core.energy.nvml import GpuDevice, NvmlMeter, ordering_warning, resolve_gpus
from llenergymeasure.core.energy.protocol import EnergyMeter
from llenergymeasure.core.energy.rapl import (
    DEFAULT_ROOT,
    RaplMeter,
    discover_zones,
    unreadable_reason,
)
from llenergymeasure.core.energy.zeus import INSTALL_HINT as ZEUS_HINT
from llenergymeasure.core.energy.zeus import ZeusMeter, zeus_available
from llenergymeasure.domain.energy import MeterSelection
from llenergymeasure.exceptions import MeterError


@dataclasses.dataclass
class MeterPlan:
    """The meters to run, the GPUs in use, who owns NVML, and the recorded selection."""

    meters: list[EnergyMeter]
    selection: MeterSelection
    gpus: list[GpuDevice]
    nvml_meter: NvmlMeter | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def probe_gpus(
    gpu_indices: Sequence[int] | None = None, environ: dict[str, str] | None = None
) -> tuple[list[GpuDevice], str | None]:
    """GPUs in use per NVML and CUDA_VISIBLE_DEVICES, or ([], why not). Never raises NvmlError."""
    try:
        nvml.init()
    except NvmlError as e:
        return [], f"NVML unavailable ({e}); is the NVIDIA driver installed?"
    except ImportError as e:
        return [], f"nvidia-ml-py not importable ({e})"
    try:
        devices = resolve_gpus(gpu_indices, environ)
    except NvmlError as e:
        return [], f"NVML could not list GPUs ({e})"
    finally:
        nvml.shutdown()
    if not devices:
        if gpu_indices is not None and len(gpu_indices) == 0:
            return [], "the workload ran on the CPU, so no GPU is in use"
        env = os.environ if environ is None else environ
        return [], f"no GPU visible (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r})"
    return devices, None


# ---- what can measure here (``llem config``) ----------------------------------------------
def meter_availability(
    gpu_indices: Sequence[int] | None = None,
    *,
    rapl_root: Path = DEFAULT_ROOT,
    environ: dict[str, str] | None = None,
) -> dict[str, tuple[bool, str]]:
    """Meter -> (usable here, why or the install hint): nvml, rapl, zeus, codecarbon, estimate.

    Probes NVML (GPUs and their energy counters) and the RAPL files; Zeus and CodeCarbon are
    only looked up (``find_spec``), never imported, so neither torch nor they get loaded.
    """
    gpus, gpu_reason = probe_gpus(gpu_indices, environ)
    no_gpu = gpu_reason or "no GPU"
    rapl_reason = unreadable_reason(discover_zones(rapl_root), rapl_root)
    return {
        "nvml": _nvml_availability(gpus, no_gpu),
        "rapl": (rapl_reason is None, rapl_reason or "CPU package/DRAM counters readable"),
        "zeus": _extra_availability("zeus", ZEUS_HINT, gpus, no_gpu),
        "codecarbon": _extra_availability("codecarbon", CODECARBON_HINT, gpus, no_gpu),
        "estimate": (
            True,
            "CPU TDP x utilisation, labelled 'estimate' (auto uses it only with no GPU and no RAPL)",
        ),
    }


def _nvml_availability(gpus: list[GpuDevice], no_gpu: str) -> tuple[bool, str]:
    """NVML: usable with any visible GPU; says which GPUs lack the energy counter."""
    if not gpus:
        return False, no_gpu
    missing = _gpus_without_counter(gpus)
    if not missing:
        return True, f"{len(gpus)} GPU(s), energy counter read at window edges"
    return True, (
        f"{len(gpus)} GPU(s); no energy counter on {', '.join(missing)}: "
        "polled power is integrated there"
    )


def _gpus_without_counter(gpus: list[GpuDevice]) -> list[str]:
    """Device keys whose NVML energy counter cannot be read."""
    missing: list[str] = []
    try:
        nvml.init()
    except (NvmlError, ImportError):
        return [d.key for d in gpus]
    try:
        for device in gpus:
            try:
                nvml.total_energy_mj(nvml.handle_by_index(device.nvml_index))
            except (NvmlNotSupported, NvmlError):
                missing.append(device.key)
    finally:
        nvml.shutdown()
    return missing


def _extra_availability(
    module: str, hint: str, gpus: list[GpuDevice], no_gpu: str
) -> tuple[bool, str]:
    """An optional GPU meter: installed (found, not imported) and a GPU to measure."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return False, f"not installed: {hint}"
    if not gpus:
        return False, f"installed, but it measures GPUs and {no_gpu}"
    return True, "installed"


def _check_name(energy_backend: str) -> None:
    """Reject unknown backend names with a suggestion."""
    if energy_backend in ENERGY_BACKENDS:
        return
    close = difflib.get_close_matches(energy_backend, ENERGY_BACKENDS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise MeterError(
        f"Unknown energy_backend {energy_backend!r}.{hint} Choose one of {', '.join(ENERGY_BACKENDS)}."
    )


def select_energy_meters(
    energy_backend: str = "auto",
    gpu_indices: Sequence[int] | None = None,
    *,
    rapl_root: Path = DEFAULT_ROOT,
    cpu_tdp_w: float | None = None,
    environ: dict[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> MeterPlan:
    """Choose meters for ``energy_backend`` (see the module docstring). Nothing is started."""
    _check_name(energy_backend)
    if energy_backend == "null":
        return _plan(
            [NullMeter("energy_backend: null", ("gpu", "cpu_package", "dram"))],
            "null",
            "energy measurement switched off (energy_backend: null)",
            [],
            {},
        )
    gpus, gpu_reason = probe_gpus(gpu_indices, environ)
    unavailable: dict[str, str] = {} if gpu_reason is None else {"nvml": gpu_reason}
    order_note = ordering_warning(gpus, environ)
    if energy_backend == "auto":
        plan = _auto(gpus, unavailable, rapl_root, cpu_tdp_w, clock, sleep)
    else:
        plan = _explicit(energy_backend, gpus, gpu_reason, gpu_indices, rapl_root, clock, sleep)
        plan.selection.unavailable.update(unavailable)
    if order_note:
        plan.notes.append(order_note)
    return plan


def _plan(
    meters: list[EnergyMeter],
    requested: str,
    reason: str,
    gpus: list[GpuDevice],
    unavailable: dict[str, str],
) -> MeterPlan:
    """Bundle meters and a MeterSelection."""
    nvml_meter = next((m for m in meters if isinstance(m, NvmlMeter)), None)
    selection = MeterSelection(
        requested=requested, meters=[m.name for m in meters], reason=reason, unavailable=unavailable
    )
    return MeterPlan(meters=meters, selection=selection, gpus=gpus, nvml_meter=nvml_meter)


def _auto(
    gpus: list[GpuDevice],
    unavailable: dict[str, str],
    rapl_root: Path,
    cpu_tdp_w: float | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> MeterPlan:
    """The auto policy."""
    meters: list[EnergyMeter] = []
    why: list[str] = []
    if gpus:
        meters.append(NvmlMeter(gpus, clock=clock, sleep=sleep))
        why.append(f"NVML works and {len(gpus)} GPU(s) are visible")
    else:
        meters.append(NullMeter(unavailable["nvml"], ("gpu",)))
        why.append(f"GPU not measured: {unavailable['nvml']}")
    rapl = RaplMeter(rapl_root, clock=clock)
    rapl.start()
    if rapl.available():
        meters.append(rapl)
        why.append("RAPL counters are readable")
    else:
        unavailable["rapl"] = rapl.reason or "unreadable"
        if gpus:
            reason = f"RAPL unavailable ({rapl.reason}); auto does not estimate CPU energy when GPUs are measured"
            meters.append(NullMeter(reason, ("cpu_package", "dram")))
            why.append("CPU not measured (no RAPL)")
        else:
            meters.append(EstimateMeter(cpu_tdp_w, clock=clock))
            why.append("no GPU and no RAPL: CPU energy is an estimate (TDP x utilisation)")
    return _plan(meters, "auto", "; ".join(why), gpus, unavailable)


def _explicit(
    backend: str,
    gpus: list[GpuDevice],
    gpu_reason: str | None,
    gpu_indices: Sequence[int] | None,
    rapl_root: Path,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> MeterPlan:
    """An explicitly requested backend, or MeterError saying how to make it work."""
    cpu_null = NullMeter(f"energy_backend: {backend} measures GPUs only", ("cpu_package", "dram"))
    if backend == "rapl":
        rapl = RaplMeter(rapl_root, clock=clock)
        rapl.start()
        if not rapl.available():
            raise MeterError(
                f"energy_backend 'rapl' requested but {rapl.reason}. Or use energy_backend: auto."
            )
        gpu_null = NullMeter("energy_backend: rapl measures CPU and DRAM only", ("gpu",))
        return _plan([rapl, gpu_null], backend, "RAPL requested and readable", gpus, {})
    if not gpus:
        raise MeterError(
            f"energy_backend {backend!r} requested but {gpu_reason}. Use energy_backend: auto or null."
        )
    if backend == "nvml":
        meter: EnergyMeter = NvmlMeter(gpus, clock=clock, sleep=sleep)
    elif backend == "zeus":
        if not zeus_available():
            raise MeterError(
                f"energy_backend 'zeus' requested but Zeus is not installed: {ZEUS_HINT}"
            )
        ordinals = list(gpu_indices) if gpu_indices is not None else list(range(len(gpus)))
        meter = ZeusMeter(gpus, ordinals)
    else:
        if not codecarbon_available():
            raise MeterError(
                f"energy_backend 'codecarbon' requested but CodeCarbon is not installed: {CODECARBON_HINT}"
            )
        return _plan(
            [CodeCarbonMeter([d.nvml_index for d in gpus])],
            backend,
            "CodeCarbon requested (owns NVML; measures GPU, CPU and RAM)",
            gpus,
            {},
        )
    return _plan([meter, cpu_null], backend, f"{backend} requested and available", gpus, {})
