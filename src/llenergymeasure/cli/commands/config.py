"""``llem config``: what this machine can measure, and the effective user config.

Shows GPUs (NVML), driver and CUDA, which backends and energy meters are usable (with the
install command for each missing one), the user config with each value's source, and its
path. ``--schema`` prints the JSON schema of the configuration files instead.

Never imports torch or any backend: availability comes from ``importlib.util.find_spec``
(meters: ``core.energy.selection.meter_availability``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.domain.environment import EnvironmentSnapshot

HELP = (
    "Show the environment (GPUs, driver, backends and energy meters available, with install "
    "hints) and the effective user config. --schema prints the config JSON schema."
)

# Library versions worth showing (distribution names for importlib.metadata).
_LIBRARIES = ("torch", "transformers", "vllm", "tensorrt-llm", "zeus", "codecarbon", "nvidia-ml-py")


def config(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Also show library versions, CPU, OS.",
        ),
    ] = 0,
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema of config files and exit.")
    ] = False,
) -> None:
    """Print the environment report (or the config JSON schema) on stdout."""
    from llenergymeasure.cli._common import set_verbosity
    from llenergymeasure.logging import setup_logging

    setup_logging(set_verbosity(verbose=verbose))
    if schema:
        typer.echo(schema_text())
        return
    typer.echo(environment_report(verbose > 0))


def schema_text() -> str:
    """The configuration JSON schema, indented."""
    import json

    from llenergymeasure.config.introspection import config_json_schema

    return json.dumps(config_json_schema(), indent=2)


def environment_report(verbose: bool = False) -> str:
    """All sections of ``llem config`` as text."""
    from llenergymeasure.core.environment import collect_environment

    env = collect_environment()
    sections = [
        gpu_section(env),
        backend_section(),
        meter_section(),
        user_config_section(),
    ]
    if verbose:
        sections.insert(1, system_section(env))
    return "\n\n".join(sections)


def gpu_section(env: EnvironmentSnapshot) -> str:
    """GPUs with VRAM, driver and CUDA; or why none is visible."""
    lines = ["GPUs"]
    if not env.gpus:
        reason = env.nvml_error or "NVML sees no GPU"
        lines.append(f"  no NVIDIA GPU visible: {reason}")
        return "\n".join(lines)
    for gpu in env.gpus:
        vram = f"{gpu.memory_total_mb / 1000:.1f} GB" if gpu.memory_total_mb else "VRAM unknown"
        extra = ", MIG" if gpu.mig_enabled else ""
        lines.append(f"  [{gpu.nvml_index}] {gpu.name}, {vram}{extra}")
    lines.append(
        f"  driver {env.driver_version or '?'}, CUDA (driver) {env.cuda_driver_version or '?'}"
    )
    if env.cuda_visible_devices is not None:
        lines.append(f"  CUDA_VISIBLE_DEVICES={env.cuda_visible_devices}")
    return "\n".join(lines)


def system_section(env: EnvironmentSnapshot) -> str:
    """CPU, RAM, OS, Python and library versions (``--verbose``)."""
    from llenergymeasure.cli.display import render_pairs

    pairs = [
        (
            "CPU",
            f"{env.cpu_model or '?'} ({env.cpu_physical_cores or '?'} cores, "
            f"{env.cpu_logical_cores or '?'} threads)",
        ),
        ("RAM", f"{env.ram_total_gb:.1f} GB" if env.ram_total_gb else "?"),
        ("OS", f"{env.os} {env.kernel or ''}".strip()),
        ("Python", env.python_version),
        ("container", env.container_evidence or ("yes" if env.in_container else "no")),
    ]
    versions = env.library_versions or library_versions()
    pairs += [(name, version or "not installed") for name, version in versions.items()]
    return "System\n" + render_pairs(pairs)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that matter, without importing them."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in _LIBRARIES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def backend_section() -> str:
    """Each backend: installed or the pip command that installs it."""
    from llenergymeasure.cli.display import render_pairs
    from llenergymeasure.config import ssot
    from llenergymeasure.core.backends.registry import is_backend_available

    pairs = []
    for name in ssot.BACKENDS:
        ok, reason = is_backend_available(name)
        precisions = ", ".join(ssot.supported_precisions(name))
        version = backend_version(name) if ok else None
        pairs.append(
            (
                name,
                f"available{f', {version}' if version else ''}; precisions: {precisions}"
                if ok
                else f"missing: {reason}",
            )
        )
    return "Backends\n" + render_pairs(pairs)


def backend_version(name: str) -> str | None:
    """The backend's engine and version from package metadata (nothing imported)."""
    from llenergymeasure.core.backends.vllm_support import vllm_version_text
    from llenergymeasure.core.environment import library_versions

    if name == "vllm":
        text = vllm_version_text()
        return f"vLLM {text}" if text else None
    dist = {"pytorch": "transformers", "tensorrt": "tensorrt_llm"}[name]
    version = library_versions((dist,)).get(dist)
    label = {"pytorch": "transformers", "tensorrt": "TensorRT-LLM"}[name]
    return f"{label} {version}" if version else None


def meter_section() -> str:
    """Energy meters available here and why (not)."""
    from llenergymeasure.cli.display import render_pairs
    from llenergymeasure.core.energy.selection import meter_availability

    pairs = [
        (name, ("yes: " if ok else "no: ") + why)
        for name, (ok, why) in meter_availability().items()
    ]
    return "Energy meters\n" + render_pairs(pairs)


def user_config_section() -> str:
    """The effective user config, each value with its source, and the file's path."""
    from llenergymeasure.config.user_config import load_user_config, user_config_path

    uc = load_user_config()
    path = user_config_path()
    state = "" if path.exists() else " (not present: defaults in use)"
    lines = [f"User config: {path}{state}", *user_config_lines(uc)]
    return "\n".join(lines)


def user_config_lines(uc: UserConfig) -> list[str]:
    """``key = value  [source]`` for every effective leaf of the user config."""
    from llenergymeasure.cli.display import render_pairs
    from llenergymeasure.config.provenance import flatten

    leaves: dict[str, Any] = flatten(uc.model_dump(mode="json"))
    pairs = [
        (path, f"{value!r}  [{uc.value_source(path)}]") for path, value in sorted(leaves.items())
    ]
    return [render_pairs(pairs)] if pairs else []
