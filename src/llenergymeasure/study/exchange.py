"""The exchange directory between a study runner and an experiment run in a container.

One ephemeral container per experiment attempt (`study.docker_runner`). The host prepares,
for the attempt's run directory ``<run dir>``:

=====================================  ==============================  =====================
host                                   in the container                 written by
=====================================  ==============================  =====================
``<run dir>/``                         ``/llem/run``                    the container: result.json,
                                                                        timeseries.parquet (the
                                                                        layout of a local run)
``<run dir>/container/request.json``   ``/llem/exchange/request.json``  the host, before the run
``<run dir>/container/error.json``     ``/llem/exchange/error.json``    the container, on failure
``<run dir>/container/container.log``  (not mounted)                    the host: the container's
                                                                        output
=====================================  ==============================  =====================

Why the container writes into the run directory itself rather than handing a result back
for the runner to copy: the run directory is made (and, with the durable runner, recorded
in the manifest) before the container starts, so a result that the container finished is
where a local run's would be even if the study process died meanwhile: a resume adopts it
the same way, and the timeline and any per-process files land beside it without a copy
step that could be lost half-way. The exchange directory lives inside the run directory so
that everything about one attempt — its request, its log, its error — is in one place.

``request.json`` (:class:`ContainerRequest`) holds the experiment config (the fields that
were set, so that defaults and provenance come out the same as in a local child), its
provenance, the user config (it never holds secrets: `config.user_config` refuses them),
the runner context that the result records (image, digest) and how the container numbers
the routed GPUs. Secrets never go into this directory: the runner passes them in a 0600
env-file outside it, deleted after the run.

While it runs, the container prints progress lines on stdout (:func:`progress_line`):
``@@llem-progress {"stage": ...}`` / ``{"done": n, "total": m}``; every other line is log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure._version import __version__
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.domain.results import RunnerContext
from llenergymeasure.exceptions import ExperimentError
from llenergymeasure.results.persistence import atomic_write_text
from llenergymeasure.study.worker import ProgressMessage, PromptsMessage, StageMessage

#: Bumped when request.json / error.json change incompatibly (image and host must agree).
PROTOCOL_VERSION = 1

EXCHANGE_SUBDIR = "container"
REQUEST_FILENAME = "request.json"
ERROR_FILENAME = "error.json"
LOG_FILENAME = "container.log"

#: Where the host's directories appear inside the container.
CONTAINER_RUN_DIR = "/llem/run"
CONTAINER_EXCHANGE_DIR = "/llem/exchange"
CONTAINER_HF_HOME = "/llem/hf-cache"
CONTAINER_CACHE_HOME = "/llem/cache"  # XDG_CACHE_HOME: the idle-baseline cache is shared
ENTRYPOINT_MODULE = "llenergymeasure.entrypoints.container"

PROGRESS_PREFIX = "@@llem-progress "


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContainerRequest(_Model):
    """What the host asks the container to run (``request.json``)."""

    protocol: int = PROTOCOL_VERSION
    llem_version: str = Field(__version__, description="the host's llem version")
    config: dict[str, Any] = Field(description="ExperimentConfig fields that were set")
    provenance: dict[str, str] = Field(default_factory=dict)
    label: str = ""
    position: int = 0
    cycle: int = 1
    verbosity: int | None = None
    user_config: dict[str, Any] | None = Field(
        None, description="the host's user config (measurement defaults; never secrets)"
    )
    runner: RunnerContext = Field(default_factory=RunnerContext)
    gpu_ordinals: list[int] | None = Field(
        None,
        description="config.gpus as the container numbers them (the routed GPUs appear as "
        "0..n-1); None: the config runs unchanged",
    )

    def experiment_config(self) -> ExperimentConfig:
        """The experiment config as the study planned it (what the result records)."""
        return ExperimentConfig.model_validate(self.config)

    def config_in_container(self) -> ExperimentConfig:
        """The config to run inside the container (GPU ordinals translated)."""
        config = self.experiment_config()
        if self.gpu_ordinals is None:
            return config
        return config.model_copy(update={"gpus": list(self.gpu_ordinals)})


class ErrorReport(_Model):
    """Why the experiment in the container failed (``error.json``)."""

    reason: str = Field(description="one line: Type: message")
    traceback: str = ""
    error_type: str | None = None


def exchange_dir(run_dir: Path) -> Path:
    """The exchange directory of a run directory (see module docstring)."""
    return Path(run_dir) / EXCHANGE_SUBDIR


def request_for(
    config: ExperimentConfig,
    *,
    provenance: dict[str, str] | None = None,
    label: str = "",
    position: int = 0,
    cycle: int = 1,
    verbosity: int | None = None,
    user_config: dict[str, Any] | None = None,
    runner: RunnerContext | None = None,
    gpu_ordinals: list[int] | None = None,
) -> ContainerRequest:
    """A request carrying ``config`` so that it validates back to an equal config."""
    return ContainerRequest(
        config=config.model_dump(mode="json", exclude_unset=True),
        provenance=dict(provenance or {}),
        label=label,
        position=position,
        cycle=cycle,
        verbosity=verbosity,
        user_config=user_config,
        runner=runner or RunnerContext(),
        gpu_ordinals=gpu_ordinals,
    )


def write_request(directory: Path, request: ContainerRequest) -> Path:
    """Write ``request.json`` into the exchange directory (made if missing)."""
    return atomic_write_text(
        Path(directory) / REQUEST_FILENAME, request.model_dump_json(indent=2) + "\n"
    )


def read_request(directory: Path) -> ContainerRequest:
    """Read ``request.json``; ExperimentError naming the file when it is missing, unreadable,
    or from an incompatible protocol (the image's llem differs from the host's)."""
    path = Path(directory) / REQUEST_FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read the request {path}: {e}") from e
    protocol = data.get("protocol") if isinstance(data, dict) else None
    if protocol != PROTOCOL_VERSION:
        host = data.get("llem_version") if isinstance(data, dict) else None
        raise ExperimentError(
            f"{path} uses exchange protocol {protocol!r} (llem {host}); this image's llem "
            f"{__version__} speaks protocol {PROTOCOL_VERSION} -> rebuild the image from this "
            "checkout (docker/README.md)"
        )
    try:
        return ContainerRequest.model_validate(data)
    except ValidationError as e:
        raise ExperimentError(f"{path} is not a valid request: {e}") from e


def write_error(directory: Path, report: ErrorReport) -> Path:
    """Write ``error.json`` into the exchange directory."""
    return atomic_write_text(
        Path(directory) / ERROR_FILENAME, report.model_dump_json(indent=2) + "\n"
    )


def read_error(directory: Path) -> ErrorReport | None:
    """``error.json`` if the container wrote one (an unreadable one is reported as such)."""
    path = Path(directory) / ERROR_FILENAME
    if not path.is_file():
        return None
    try:
        return ErrorReport.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as e:
        return ErrorReport(reason=f"unreadable {ERROR_FILENAME}: {e}")


def progress_line(message: ProgressMessage) -> str:
    """The stdout line that carries one progress message out of the container."""
    if isinstance(message, StageMessage):
        body: dict[str, Any] = {"stage": message.name}
    else:
        body = {"done": message.done, "total": message.total}
    return PROGRESS_PREFIX + json.dumps(body, separators=(",", ":"))


def parse_progress_line(line: str) -> ProgressMessage | None:
    """The progress message a container output line carries, or None (a log line)."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        body = json.loads(line[len(PROGRESS_PREFIX) :])
        if "stage" in body:
            return StageMessage(str(body["stage"]))
        return PromptsMessage(int(body["done"]), int(body["total"]))
    except (ValueError, TypeError, KeyError):
        return None
