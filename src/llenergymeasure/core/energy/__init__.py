"""Energy measurement layer: meters with named windows, telemetry sampler, idle baseline.

Entry points for the orchestrator: ``EnergySession`` and ``select_energy_meters``. Modules:
``_nvml`` (the only NVML caller), ``nvml`` (GPU counter meter), ``sampler`` + ``timeline``
(telemetry in a separate process), ``baseline`` (idle power), ``rapl`` (CPU/DRAM counters),
``estimate`` (CPU TDP x utilisation: an estimate), ``zeus`` / ``codecarbon`` (optional
backends), ``null`` (nothing to measure), ``selection`` (which meters), ``quality`` (flags).
Importing this package imports neither torch nor pynvml (pynvml loads on first NVML use).
"""

from llenergymeasure.config.ssot import ENERGY_BACKENDS
from llenergymeasure.core.energy.baseline import BaselineCache, BaselineSettings, adjust_for_idle
from llenergymeasure.core.energy.estimate import EstimateMeter
from llenergymeasure.core.energy.null import NullMeter
from llenergymeasure.core.energy.nvml import (
    GpuDevice,
    NvmlMeter,
    parse_cuda_visible_devices,
    resolve_gpus,
)
from llenergymeasure.core.energy.protocol import EnergyMeter, WindowReading
from llenergymeasure.core.energy.rapl import RaplMeter
from llenergymeasure.core.energy.sampler import NvmlSampleSource, SampleSource, TelemetrySampler
from llenergymeasure.core.energy.selection import MeterPlan, probe_gpus, select_energy_meters
from llenergymeasure.core.energy.session import EnergySession
from llenergymeasure.core.energy.timeline import Timeline, read_parquet

__all__ = [
    "ENERGY_BACKENDS",
    "BaselineCache",
    "BaselineSettings",
    "EnergyMeter",
    "EnergySession",
    "EstimateMeter",
    "GpuDevice",
    "MeterPlan",
    "NullMeter",
    "NvmlMeter",
    "NvmlSampleSource",
    "RaplMeter",
    "SampleSource",
    "TelemetrySampler",
    "Timeline",
    "WindowReading",
    "adjust_for_idle",
    "parse_cuda_visible_devices",
    "probe_gpus",
    "read_parquet",
    "resolve_gpus",
    "select_energy_meters",
]
