"""Docker for the container runner: the ``docker run`` command line, GPU routing, the
secrets env-file, image facts and the pre-flight checks.

Everything here is either a pure function (the command line, GPU routing) or one ``docker``
CLI call (``info``, ``image inspect``, ``stop``, ``rm``, ``ps``), so that the runner
(`study.docker_runner`) stays a small supervisor and tests can check the exact command lines
(the test suite puts a fake ``docker`` executable first on PATH).

The command line of one experiment (:func:`docker_run_argv`)::

    docker run --rm --name <name> --pull never --init --ipc host
        --label llem.study_dir=<abs> --label llem.run_dir=<abs> --label llem.position=<n> ...
        --user <uid>:<gid>
        [--gpus "device=<ids>" | --gpus all]
        -e CUDA_VISIBLE_DEVICES=0,..  -e CUDA_DEVICE_ORDER=PCI_BUS_ID   (when GPUs are routed)
        -e HOME=/tmp -e USER=llem -e HF_HOME=/llem/hf-cache -e XDG_CACHE_HOME=/llem/cache
        -e PYTHONUNBUFFERED=1
        -e HF_HUB_OFFLINE=...                                           (passed on when set)
        [--env-file <0600 temp file>]                                   (secrets: HF_TOKEN, ...)
        -v <run dir>:/llem/run -v <run dir>/container:/llem/exchange
        -v <HF cache>:/llem/hf-cache -v <llem cache>:/llem/cache/llenergymeasure
        --entrypoint python3 <image> -m llenergymeasure.entrypoints.container
        --exchange /llem/exchange --run-dir /llem/run

* ``--rm`` + ``--name``: the container is ephemeral, and named so that a timeout or a stop
  can ``docker stop`` / ``docker rm -f`` it; labels let a resume find leftovers of a study.
* ``--pull never``: the image must be present (pre-flight checks it), nothing is fetched
  behind the user's back; ``--init``: a real PID 1 forwards ``docker stop``'s SIGTERM.
* ``--user``: files the container writes into the run directory belong to the user.
* GPUs: the experiment's ``gpus`` (CUDA ordinals as llem sees them, through the host's
  ``CUDA_VISIBLE_DEVICES``) become host device ids for ``--gpus``; inside, the routed GPUs
  are numbered from 0, so ``CUDA_VISIBLE_DEVICES=0,..,n-1`` and the config runs with its
  ``gpus`` translated (`study.exchange.ContainerRequest.gpu_ordinals`); the result keeps the
  study's config. NVML inside sees exactly the routed GPUs: the container measures them.
* Secrets (:data:`SECRET_ENV_VARS`) never appear on the command line or in a file the tool
  keeps: they go into a 0600 temp file outside the results (``--env-file``), deleted after
  the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.core.energy.nvml import parse_cuda_visible_devices
from llenergymeasure.exceptions import ConfigError
from llenergymeasure.results.filenames import safe_component
from llenergymeasure.study.exchange import (
    CONTAINER_CACHE_HOME,
    CONTAINER_EXCHANGE_DIR,
    CONTAINER_HF_HOME,
    CONTAINER_RUN_DIR,
    ENTRYPOINT_MODULE,
)

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig

DOCKER = "docker"
RUNNER_PREFIX = "docker:"
#: Environment variables passed into the container only through the 0600 env-file.
SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
#: Non-secret variables passed on (``-e``) when set on the host.
PASSED_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT")
#: The Dockerfile of this repository that builds each backend's image.
DOCKERFILES = {
    "pytorch": "docker/pytorch.Dockerfile",
    "vllm": "docker/vllm.Dockerfile",
    "tensorrt": "docker/tensorrt.Dockerfile",
}
DOCKER_CALL_TIMEOUT_S = 60.0
STOP_GRACE_S = 10  # docker stop --time: SIGTERM, then SIGKILL after this long
LABEL_STUDY_DIR = "llem.study_dir"


class DockerError(Exception):
    """A docker CLI call could not be made (not installed, timed out)."""


def image_of(spec: str) -> str | None:
    """The image of a ``docker:<image>`` runner spec; None for ``local``."""
    return spec[len(RUNNER_PREFIX) :] if spec.startswith(RUNNER_PREFIX) else None


# ---- GPU routing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuRouting:
    """Which host GPUs a container gets and how it numbers them."""

    gpus_flag: str | None = None  # the --gpus value; None: no GPUs routed
    devices: list[str] | None = None  # host device ids routed (None: none, or all)
    visible: str | None = None  # CUDA_VISIBLE_DEVICES inside (None: left unset)
    ordinals: list[int] | None = None  # config.gpus as the container numbers them

    @property
    def routes_gpus(self) -> bool:
        """Whether any GPU goes into the container."""
        return self.gpus_flag is not None


def wants_gpu(config: ExperimentConfig, host_gpu_count: int) -> bool:
    """Whether the experiment's container needs GPUs routed: ``device: cuda`` or explicit
    ``gpus``; ``device: auto`` when the host has a GPU; never for ``device: cpu``."""
    if config.device == "cpu":
        return False
    if config.device == "cuda" or config.gpus is not None:
        return True
    return host_gpu_count > 0


def route_gpus(
    config: ExperimentConfig, host_cuda_visible: str | None, host_gpu_count: int
) -> GpuRouting:
    """The GPU routing for ``config`` (see module docstring); ConfigError when ``gpus``
    names an ordinal that the host's CUDA_VISIBLE_DEVICES does not have."""
    if not wants_gpu(config, host_gpu_count):
        return GpuRouting()
    visible = parse_cuda_visible_devices(host_cuda_visible)
    if config.gpus is None:
        if visible is None:
            return GpuRouting(gpus_flag="all")
        if not visible:
            return GpuRouting()  # CUDA_VISIBLE_DEVICES hides every GPU from llem
        devices = list(visible)
    elif visible is None:
        devices = [str(i) for i in config.gpus]
    else:
        missing = [i for i in config.gpus if i >= len(visible)]
        if missing:
            raise ConfigError(
                f"gpus {config.gpus}: ordinal(s) {missing} are not visible "
                f"(CUDA_VISIBLE_DEVICES={host_cuda_visible} lists {len(visible)}) -> use "
                f"ordinals below {len(visible)}, or change CUDA_VISIBLE_DEVICES"
            )
        devices = [visible[i] for i in config.gpus]
    ordinals = _container_ordinals(devices) if config.gpus is not None else None
    return GpuRouting(
        gpus_flag=f'"device={",".join(devices)}"',  # quoted: docker splits --gpus on commas
        devices=devices,
        visible=",".join(str(i) for i in range(len(devices))),
        ordinals=ordinals,
    )


def _container_ordinals(devices: list[str]) -> list[int]:
    """Where each routed device appears inside: the runtime enumerates the routed GPUs in
    host order, so numeric ids map to their rank; UUIDs keep their listed order."""
    if all(d.isdigit() for d in devices):
        ranked = sorted(devices, key=int)
        return [ranked.index(d) for d in devices]
    return list(range(len(devices)))


# ---- the command line ----------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    """A bind mount ``-v host:container``."""

    host: Path
    container: str
    read_only: bool = False

    def flag(self) -> str:
        """The ``-v`` value; ValueError for a host path docker cannot bind with -v."""
        host = str(self.host)
        if ":" in host or "," in host:
            raise ValueError(
                f"{host}: a path with ':' or ',' cannot be mounted into a container -> "
                "use a results directory whose path has neither"
            )
        return f"{host}:{self.container}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class DockerRun:
    """Everything one ``docker run`` needs; :func:`docker_run_argv` renders it."""

    image: str
    name: str
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    env_file: Path | None = None
    labels: tuple[tuple[str, str], ...] = ()
    gpus: str | None = None
    user: str | None = None
    workdir: str | None = None
    entrypoint: str | None = "python3"
    command: tuple[str, ...] = ()
    docker: str = DOCKER


def docker_run_argv(run: DockerRun) -> list[str]:
    """The exact ``docker run`` argv (pure). ValueError if a secret would be on it."""
    leaked = [k for k, _ in run.env if k in SECRET_ENV_VARS]
    if leaked:
        raise ValueError(f"{', '.join(leaked)} must go through the env-file, never -e")
    argv = [run.docker, "run", "--rm", "--name", run.name, "--pull", "never", "--init"]
    argv += ["--ipc", "host"]
    for key, value in run.labels:
        argv += ["--label", f"{key}={value}"]
    if run.user:
        argv += ["--user", run.user]
    if run.gpus:
        argv += ["--gpus", run.gpus]
    for key, value in run.env:
        argv += ["-e", f"{key}={value}"]
    if run.env_file is not None:
        argv += ["--env-file", str(run.env_file)]
    for mount in run.mounts:
        argv += ["-v", mount.flag()]
    if run.workdir:
        argv += ["-w", run.workdir]
    if run.entrypoint:
        argv += ["--entrypoint", run.entrypoint]
    return [*argv, run.image, *run.command]


def entrypoint_command() -> tuple[str, ...]:
    """The arguments after the image: run the container entry point on the mounts."""
    return (
        "-m",
        ENTRYPOINT_MODULE,
        "--exchange",
        CONTAINER_EXCHANGE_DIR,
        "--run-dir",
        CONTAINER_RUN_DIR,
    )


def input_mounts(config: ExperimentConfig, cwd: Path) -> tuple[tuple[Mount, ...], str | None]:
    """Host paths the config names — a local model directory, a dataset file (read-only),
    the TensorRT engine cache (read-write) — mounted at the same absolute paths, so the
    config runs unchanged; and the working directory (the host's) when one of them is
    relative. Names that are not host paths (a catalogue name, a Hub id) mount nothing."""
    wanted: list[tuple[str, bool]] = []
    if Path(config.model).expanduser().exists():
        wanted.append((config.model, True))
    dataset = config.dataset
    is_name = not isinstance(dataset, str) or dataset == "builtin" or dataset.startswith("hf:")
    if isinstance(dataset, str) and not is_name and Path(dataset).expanduser().exists():
        wanted.append((dataset, True))
    trt = getattr(config, "tensorrt", None)
    engine_dir = getattr(trt, "engine_cache_dir", None) if trt is not None else None
    if isinstance(engine_dir, str):
        Path(engine_dir).expanduser().mkdir(parents=True, exist_ok=True)
        wanted.append((engine_dir, False))
    mounts: list[Mount] = []
    relative = False
    for text, read_only in wanted:
        path = Path(text).expanduser()
        relative = relative or not path.is_absolute()
        target = path if path.is_absolute() else Path(cwd) / path
        mount = Mount(target.resolve(), str(target), read_only)
        if mount not in mounts:
            mounts.append(mount)
    return tuple(mounts), (str(cwd) if relative else None)


def container_name(run_dir: Path) -> str:
    """A container name unique to one attempt: its run directory's name and a hash of its
    absolute path (two studies may make run dirs of the same name in the same second)."""
    path = str(Path(run_dir).resolve())
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:8]
    return f"llem-{safe_component(Path(run_dir).name)[:80]}-{digest}"


def container_env(routing: GpuRouting, environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The non-secret ``-e`` variables, in command-line order."""
    env: list[tuple[str, str]] = []
    if routing.visible is not None:
        env += [("CUDA_VISIBLE_DEVICES", routing.visible), ("CUDA_DEVICE_ORDER", "PCI_BUS_ID")]
    env += [
        ("HOME", "/tmp"),
        ("USER", "llem"),  # --user gives a uid without a passwd entry: getpass needs a name
        ("HF_HOME", CONTAINER_HF_HOME),
        ("XDG_CACHE_HOME", CONTAINER_CACHE_HOME),
        ("PYTHONUNBUFFERED", "1"),
    ]
    env += [(k, environ[k]) for k in PASSED_ENV_VARS if environ.get(k)]
    return tuple(env)


def host_hf_home(environ: Mapping[str, str]) -> Path:
    """The host's Hugging Face cache home (``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``,
    else ``~/.cache/huggingface``), mounted so that models are downloaded once."""
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser()
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface"


def host_llem_cache() -> Path:
    """The host's llem cache directory (the idle-baseline cache), shared with containers."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("llenergymeasure"))


def current_user() -> str | None:
    """``uid:gid`` of this process (files the container writes are then ours); None where
    there are no POSIX ids."""
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


# ---- secrets -------------------------------------------------------------------------------
def secrets_from(environ: Mapping[str, str]) -> dict[str, str]:
    """The secret variables set on the host (a value with a newline cannot be passed)."""
    return {k: environ[k] for k in SECRET_ENV_VARS if environ.get(k) and "\n" not in environ[k]}


def write_env_file(secrets: Mapping[str, str]) -> Path | None:
    """A 0600 ``--env-file`` in the system temp directory holding ``secrets`` (None when
    there are none). The caller deletes it after the run (:func:`remove_env_file`)."""
    if not secrets:
        return None
    fd, name = tempfile.mkstemp(prefix="llem-env-", suffix=".list")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(f"{k}={v}\n" for k, v in secrets.items())
    except BaseException:
        remove_env_file(Path(name))
        raise
    return Path(name)


def remove_env_file(path: Path | None) -> None:
    """Delete the env-file (never raises)."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


# ---- docker CLI calls ----------------------------------------------------------------------
@dataclass(frozen=True)
class CallResult:
    """One docker CLI call's exit code and output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        """stderr (else stdout), one line."""
        text = (self.stderr or self.stdout).strip().splitlines()
        return text[-1] if text else f"exit code {self.returncode}"


def docker_call(
    args: Sequence[str], docker: str = DOCKER, timeout_s: float = DOCKER_CALL_TIMEOUT_S
) -> CallResult:
    """Run ``docker <args>``; DockerError when docker is missing or the call hangs."""
    argv = [docker, *args]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as e:
        raise DockerError(f"{docker!r} not found on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise DockerError(f"`{' '.join(argv)}` did not answer within {timeout_s:g} s") from e
    return CallResult(argv, done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class DockerInfo:
    """What ``docker info`` says: is the daemon reachable, which runtimes it has."""

    reachable: bool
    error: str | None = None
    server_version: str | None = None
    runtimes: tuple[str, ...] = ()

    @property
    def nvidia_runtime(self) -> bool:
        """Whether the NVIDIA container runtime is registered with the daemon."""
        return "nvidia" in self.runtimes


def docker_info(docker: str = DOCKER) -> DockerInfo:
    """``docker info --format {{json .}}``, interpreted (never raises)."""
    if shutil.which(docker) is None:
        return DockerInfo(reachable=False, error=f"{docker!r} not found on PATH")
    try:
        call = docker_call(["info", "--format", "{{json .}}"], docker)
    except DockerError as e:
        return DockerInfo(reachable=False, error=str(e))
    data = _json_object(call.stdout)
    errors = [str(e) for e in (data.get("ServerErrors") or [])]
    version = data.get("ServerVersion") or None
    if call.returncode != 0 or errors or not version:
        return DockerInfo(reachable=False, error="; ".join(errors) or call.message)
    runtimes = data.get("Runtimes") or {}
    return DockerInfo(
        reachable=True,
        server_version=str(version),
        runtimes=tuple(sorted(runtimes)) if isinstance(runtimes, dict) else (),
    )


@dataclass(frozen=True)
class ImageInfo:
    """A local image: its reference, content id and registry digests."""

    reference: str
    id: str
    repo_digests: list[str] = field(default_factory=list)


def inspect_image(image: str, docker: str = DOCKER) -> ImageInfo | None:
    """``docker image inspect``: the image's id and digests, None when it is not present.
    DockerError when docker itself cannot answer."""
    call = docker_call(["image", "inspect", image], docker)
    if call.returncode != 0:
        if "no such image" in (call.stderr + call.stdout).lower():
            return None
        raise DockerError(f"docker image inspect {image}: {call.message}")
    try:
        data = json.loads(call.stdout)
        first = data[0] if isinstance(data, list) else data
        return ImageInfo(
            reference=image,
            id=str(first["Id"]),
            repo_digests=[str(d) for d in first.get("RepoDigests") or []],
        )
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise DockerError(f"docker image inspect {image}: unexpected output ({e})") from e


def stop_and_remove(name: str, docker: str = DOCKER, grace_s: int = STOP_GRACE_S) -> list[str]:
    """``docker stop --time <grace> <name>`` then ``docker rm -f <name>``; what each said
    (a container already gone is fine). Never raises."""
    notes = []
    for args, timeout in (
        (["stop", "--time", str(grace_s), name], grace_s + DOCKER_CALL_TIMEOUT_S),
        (["rm", "-f", name], DOCKER_CALL_TIMEOUT_S),
    ):
        try:
            call = docker_call(args, docker, timeout_s=timeout)
        except DockerError as e:
            notes.append(f"docker {' '.join(args)}: {e}")
            continue
        outcome = "ok" if call.returncode == 0 else call.message
        notes.append(f"docker {' '.join(args)}: {outcome}")
    return notes


def study_containers(study_dir: Path, docker: str = DOCKER) -> list[str]:
    """Names of containers (running or not) labelled with this study directory."""
    label = f"{LABEL_STUDY_DIR}={Path(study_dir).resolve()}"
    try:
        call = docker_call(
            ["ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}"], docker
        )
    except DockerError:
        return []
    if call.returncode != 0:
        return []
    return [line.strip() for line in call.stdout.splitlines() if line.strip()]


def _json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` ({} when there is none)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return {}


# ---- pre-flight ----------------------------------------------------------------------------
@dataclass
class DockerCheck:
    """Pre-flight of the Docker runners a study uses: every problem, each with its fix."""

    info: DockerInfo
    images: dict[str, ImageInfo | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def docker_preflight(
    images: Mapping[str, str], needs_gpu: bool, docker: str = DOCKER
) -> DockerCheck:
    """Check Docker reachable, the NVIDIA runtime present (when a container gets GPUs) and
    every image present; ``images`` maps backend -> image. All problems are collected."""
    info = docker_info(docker)
    check = DockerCheck(info=info)
    if not info.reachable:
        check.problems.append(unreachable_problem(info, docker))
        shown = ", ".join(sorted(set(images.values())))
        check.problems.append(
            f"image(s) {shown}: not checked (Docker is not reachable) -> fix Docker first"
        )
        return check
    if needs_gpu and not info.nvidia_runtime:
        check.problems.append(
            "the NVIDIA container runtime is not registered with Docker (docker info lists "
            f"runtimes: {', '.join(info.runtimes) or 'none'}), so containers cannot get GPUs "
            "-> install the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure "
            "--runtime=docker && sudo systemctl restart docker` (or run these experiments "
            "with device: cpu)"
        )
    for backend, image in images.items():
        try:
            found = inspect_image(image, docker)
        except DockerError as e:
            check.problems.append(f"image {image!r} (runners.{backend}): {e}")
            continue
        check.images[image] = found
        if found is None:
            check.problems.append(missing_image_problem(backend, image))
    return check


def missing_image_problem(backend: str, image: str) -> str:
    """The problem line for an image that is not present, with how to build it."""
    dockerfile = DOCKERFILES.get(backend, "docker/pytorch.Dockerfile")
    return (
        f"image {image!r} (runners.{backend}) is not present -> build it from this "
        f"checkout: docker build -f {dockerfile} -t {image} . (or docker pull it)"
    )


def unreachable_problem(info: DockerInfo, docker: str = DOCKER) -> str:
    """The problem line for a Docker that cannot be used, with the fix."""
    if shutil.which(docker) is None:
        return (
            f"Docker is not installed ({docker!r} not found on PATH) -> install Docker "
            "Engine, or set these backends' runners to local"
        )
    return (
        f"the Docker daemon is not reachable ({info.error}) -> start it (`sudo systemctl "
        "start docker`) and let this user use it (`sudo usermod -aG docker $USER`, then log "
        "in again), or set these backends' runners to local"
    )


def host_gpu_count() -> int:
    """GPUs NVML sees on the host (0 without a driver): ``device: auto`` routes GPUs only
    when there are some."""
    from llenergymeasure.core.energy._nvml import NvmlError, nvml

    try:
        nvml.init()
    except (NvmlError, ImportError):
        return 0
    try:
        return nvml.device_count()
    except NvmlError:
        return 0
    finally:
        nvml.shutdown()
