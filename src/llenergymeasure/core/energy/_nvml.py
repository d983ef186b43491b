"""The one place that calls NVML (``pynvml`` from nvidia-ml-py).

Everything else in the package goes through the module-level ``nvml`` object. Its ``lib``
attribute is the ``pynvml`` module by default; ``llenergymeasure.testing.FakeNVML`` swaps in a
scripted stand-in (``with FakeNVML(...).installed(): ...``). Units are converted here, once:
NVML's mJ / mW / bytes / MHz become ``energy_mj`` (int, as read), ``power_w``, ``*_mb``, ``*_mhz``.

NVML errors are translated into ``NvmlError`` (and ``NvmlNotSupported`` for
``NVML_ERROR_NOT_SUPPORTED``), both ``MeterError``s, with ``raise ... from e``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from llenergymeasure.exceptions import MeterError

T = TypeVar("T")

# NVML constants we use (stable across NVML versions; copied so the fake needs none).
NVML_ERROR_NOT_SUPPORTED = 3
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_FI_DEV_POWER_INSTANT = 186

# Clock event ("throttle") reason bits -> names used in reports.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clock",
}
# Reasons that mean the workload was slowed down (idle and app-clock settings do not).
SLOWDOWN_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"}
)


class NvmlError(MeterError):
    """An NVML call failed."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NvmlNotSupported(NvmlError):
    """The device does not support this NVML query (e.g. no energy counter before Volta)."""


class Nvml:
    """Thin adapter over the NVML function table ``lib``; one shared instance: ``nvml``.

    ``lib`` is ``pynvml`` unless a library was installed explicitly (``nvml.lib = x`` or
    ``with nvml.using(x):``, e.g. a ``testing.FakeNVML``); :meth:`installed_lib` offers that
    library to other processes (the telemetry sampler) so that they use the same one.
    """

    def __init__(self) -> None:
        self._installed: Any = None  # explicitly installed library; None: pynvml
        self._pynvml: Any = None  # pynvml, imported on first use

    @property
    def lib(self) -> Any:
        """The NVML function table: the installed library, else ``pynvml``."""
        if self._installed is not None:
            return self._installed
        if self._pynvml is None:
            import pynvml

            self._pynvml = pynvml
        return self._pynvml

    @lib.setter
    def lib(self, value: Any) -> None:
        """Install ``value`` in place of pynvml (None: back to pynvml)."""
        self._installed = value

    @contextlib.contextmanager
    def using(self, lib: Any) -> Iterator[None]:
        """Use ``lib`` instead of pynvml inside the block (tests, fakes; None: pynvml)."""
        previous = self._installed
        self._installed = lib
        try:
            yield
        finally:
            self._installed = previous

    def installed_lib(self) -> Any | None:
        """The library installed explicitly in place of pynvml, or None when pynvml is used.

        A child process that must read the same (possibly scripted) GPUs installs it there.
        """
        lib = self._installed
        return None if lib is None or lib is sys.modules.get("pynvml") else lib

    def _call(self, name: str, *args: Any) -> Any:
        """Call ``lib.<name>(*args)``, translating NVML errors."""
        try:
            return getattr(self.lib, name)(*args)
        except Exception as e:
            code = getattr(e, "value", None)
            if not _is_nvml_error(e):
                raise
            if code == NVML_ERROR_NOT_SUPPORTED:
                raise NvmlNotSupported(f"{name}: not supported on this device", code) from e
            raise NvmlError(f"{name} failed: {e}", code) from e

    def optional(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``, or None if NVML says it failed or is not supported."""
        try:
            return fn(*args)
        except NvmlError:
            return None

    # --- library ---------------------------------------------------------------------
    def init(self) -> None:
        """Initialise NVML (reference counted by NVML itself)."""
        self._call("nvmlInit")

    def shutdown(self) -> None:
        """Release one NVML reference; errors are ignored (nothing useful to do)."""
        with contextlib.suppress(NvmlError):
            self._call("nvmlShutdown")

    def device_count(self) -> int:
        """Number of GPUs NVML sees (ignores CUDA_VISIBLE_DEVICES)."""
        return int(self._call("nvmlDeviceGetCount"))

    def driver_version(self) -> str:
        """Driver version string, e.g. '580.159.04'."""
        return _text(self._call("nvmlSystemGetDriverVersion"))

    def cuda_driver_version(self) -> str:
        """Highest CUDA version the driver supports, e.g. '13.0'."""
        v = int(self._call("nvmlSystemGetCudaDriverVersion"))
        return f"{v // 1000}.{(v % 1000) // 10}"

    # --- handles ---------------------------------------------------------------------
    def handle_by_index(self, index: int) -> Any:
        """Handle of the GPU at NVML index ``index``."""
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def handle_by_uuid(self, uuid: str) -> Any:
        """Handle of a GPU (``GPU-...``) or MIG instance (``MIG-...``) by UUID."""
        return self._call("nvmlDeviceGetHandleByUUID", uuid)

    def parent_of_mig(self, handle: Any) -> Any:
        """The physical GPU handle of a MIG instance handle (itself if not MIG)."""
        is_mig = self.optional(self._call, "nvmlDeviceIsMigDeviceHandle", handle)
        if not is_mig:
            return handle
        return self._call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)

    def index(self, handle: Any) -> int:
        """NVML index of a GPU handle."""
        return int(self._call("nvmlDeviceGetIndex", handle))

    def uuid(self, handle: Any) -> str:
        """GPU UUID, 'GPU-...'."""
        return _text(self._call("nvmlDeviceGetUUID", handle))

    def name(self, handle: Any) -> str:
        """Product name, e.g. 'NVIDIA H100 80GB HBM3'."""
        return _text(self._call("nvmlDeviceGetName", handle))

    # --- readings --------------------------------------------------------------------
    def total_energy_mj(self, handle: Any) -> int:
        """Energy counter since driver load, mJ (Volta+). Costs ~3.5 ms: edges only."""
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption", handle))

    def power_w(self, handle: Any) -> float:
        """Board power, W (a ~1 s moving average on Ampere+ except GA100)."""
        return float(self._call("nvmlDeviceGetPowerUsage", handle)) / 1000.0

    def power_instant_w(self, handle: Any) -> float:
        """Instantaneous power via field NVML_FI_DEV_POWER_INSTANT, W."""
        values = self._call("nvmlDeviceGetFieldValues", handle, [NVML_FI_DEV_POWER_INSTANT])
        field = values[0]
        if int(field.nvmlReturn) != 0:
            raise NvmlNotSupported("NVML_FI_DEV_POWER_INSTANT not available", int(field.nvmlReturn))
        return float(field.value.uiVal) / 1000.0

    def temperature_c(self, handle: Any) -> float:
        """GPU core temperature, degrees C."""
        return float(self._call("nvmlDeviceGetTemperature", handle, NVML_TEMPERATURE_GPU))

    def sm_clock_mhz(self, handle: Any) -> float:
        """Current SM clock, MHz."""
        return float(self._call("nvmlDeviceGetClockInfo", handle, NVML_CLOCK_SM))

    def memory_mb(self, handle: Any) -> tuple[float, float]:
        """(used, total) device memory, MB."""
        info = self._call("nvmlDeviceGetMemoryInfo", handle)
        return float(info.used) / 2**20, float(info.total) / 2**20

    def utilisation_pct(self, handle: Any) -> float:
        """GPU utilisation over the driver's last sample period, %."""
        return float(self._call("nvmlDeviceGetUtilizationRates", handle).gpu)

    def throttle_reasons(self, handle: Any) -> int:
        """Bitmask of current clock event (throttle) reasons."""
        try:
            return int(self._call("nvmlDeviceGetCurrentClocksEventReasons", handle))
        except NvmlError:
            return int(self._call("nvmlDeviceGetCurrentClocksThrottleReasons", handle))

    def mig_enabled(self, handle: Any) -> bool:
        """True if MIG mode is currently on."""
        current, _pending = self._call("nvmlDeviceGetMigMode", handle)
        return bool(current)

    def persistence_mode(self, handle: Any) -> bool:
        """True if persistence mode is on."""
        return bool(self._call("nvmlDeviceGetPersistenceMode", handle))

    def power_limit_w(self, handle: Any) -> float:
        """Enforced power limit, W."""
        return float(self._call("nvmlDeviceGetEnforcedPowerLimit", handle)) / 1000.0

    def compute_process_count(self, handle: Any) -> int:
        """Processes holding a CUDA compute context on the GPU (any process, any user)."""
        return len(self._call("nvmlDeviceGetComputeRunningProcesses", handle))


def _is_nvml_error(e: BaseException) -> bool:
    """True for pynvml's NVMLError family (also what FakeNVML raises)."""
    return any(cls.__name__ == "NVMLError" for cls in type(e).__mro__)


def _text(value: Any) -> str:
    """NVML strings are bytes in old bindings and str in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def throttle_names(mask: int) -> list[str]:
    """Names of the reasons set in a clock-event bitmask."""
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


nvml = Nvml()
