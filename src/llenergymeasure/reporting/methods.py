"""How each result was measured, and where results that are shown together differ in that.

``energy_basis(result)`` names what an energy figure is (the J/token basis plus the meters'
method and scope, e.g. ``gpu gross counter (counter, gpu, nvml)``) and says ``ESTIMATE`` when
any part of it is modelled rather than measured, so an estimate never passes for a
measurement. ``method_differences(results)`` lists the aspects (machine, backend, meter,
basis, timing, driver, libraries) whose value is not the same for all of them; the report
and ``llem compare`` print it wherever results are put side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llenergymeasure.domain.results import ExperimentResult

#: Aspects that change what a number means: results differing here are not like for like.
METHOD_ASPECTS = ("machine", "backend", "energy meter", "energy basis", "timing")
#: Aspects that describe the software/driver stack (what a before/after comparison is about).
STACK_ASPECTS = ("driver", "CUDA", "libraries", "llem")
LIBRARIES = ("torch", "transformers", "vllm", "tensorrt_llm", "nvidia-ml-py")


def meters_text(result: ExperimentResult) -> str:
    """``counter, gpu, nvml; counter, cpu_package, rapl`` (as ``llem run`` prints them), or
    ``not measured``."""
    energy = result.energy
    if energy is None or not energy.measurements:
        return "not measured"
    parts = [", ".join(dict.fromkeys([m.method, m.scope, m.meter])) for m in energy.measurements]
    return "; ".join(dict.fromkeys(parts))


def is_estimate(result: ExperimentResult) -> bool:
    """Whether any energy figure of ``result`` is an estimate (a model, not a measurement)."""
    energy = result.energy
    return energy is not None and any(m.method == "estimate" for m in energy.measurements)


def energy_basis(result: ExperimentResult) -> str:
    """What the result's energy figures are: J/token basis, meters (method, scope)."""
    ratios = result.metrics.energy_ratios if result.metrics else None
    meters = meters_text(result)
    if ratios is None and meters == "not measured":
        return "not measured"
    basis = ratios.energy_basis if ratios else "energy"
    text = f"{basis} ({meters})"
    return f"ESTIMATE, not a measurement: {text}" if is_estimate(result) else text


def machine(result: ExperimentResult) -> str:
    """GPU model(s) and count, else the CPU model: which hardware ran the experiment."""
    env = result.environment
    if env is None:
        return "unknown"
    device = (
        result.metrics.memory.device if result.metrics and result.metrics.memory else None
    ) or str(result.config.get("device") or "")
    if env.gpus and not device.startswith("cpu"):
        names = [g.name for g in env.gpus]
        counts = {n: names.count(n) for n in dict.fromkeys(names)}
        return ", ".join(f"{c}x {n}" for n, c in counts.items())
    return f"CPU: {env.cpu_model or 'unknown'}"


def aspects(result: ExperimentResult) -> dict[str, str]:
    """The value of every method and stack aspect for one result."""
    env = result.environment
    libs = env.library_versions if env else {}
    lib_text = ", ".join(f"{k} {v}" for k in LIBRARIES if (v := libs.get(k))) or "unknown"
    return {
        "machine": machine(result),
        "backend": str(result.config.get("backend") or "unknown"),
        "energy meter": meters_text(result),
        "energy basis": energy_basis(result),
        "timing": result.timing_method or "unknown",
        "driver": (env.driver_version if env else None) or "none",
        "CUDA": (env.cuda_driver_version if env else None) or "none",
        "libraries": lib_text,
        "llem": result.llem_version or "unknown",
    }


@dataclass(frozen=True)
class Difference:
    """One aspect that is not the same for every result, with the values seen."""

    aspect: str
    values: tuple[str, ...]
    changes_meaning: bool  # a method aspect (not like for like), not only the software stack

    def text(self) -> str:
        """``energy basis differs: a | b``."""
        return f"{self.aspect} differs: " + " | ".join(self.values)


def method_differences(
    results: Iterable[ExperimentResult], names: Sequence[str] = (*METHOD_ASPECTS, *STACK_ASPECTS)
) -> list[Difference]:
    """Aspects whose values differ between ``results`` (first-seen order of values)."""
    seen: dict[str, list[str]] = {name: [] for name in names}
    for result in results:
        values = aspects(result)
        for name in names:
            if values[name] not in seen[name]:
                seen[name].append(values[name])
    return [
        Difference(name, tuple(vals), name in METHOD_ASPECTS)
        for name, vals in seen.items()
        if len(vals) > 1
    ]
