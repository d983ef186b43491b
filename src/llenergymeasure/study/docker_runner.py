"""DockerRunner: one experiment of a study in one ephemeral container of its backend's image.

The study runner picks it for a backend whose runner is ``docker:<image>`` (user config
``runners:``, `study.runners`). Per attempt it:

1. makes the run directory (or takes the one the study made) and its exchange directory,
   and writes ``request.json`` there (`study.exchange`);
2. writes the secrets (``HF_TOKEN``, ...) set on the host into a 0600 env-file in the
   system temp directory — never on the command line, never under the results;
3. starts ``docker run --rm --name <name> ...`` (`study.docker.docker_run_argv`) and reads
   its output, blocking on the pipe with the experiment's deadline (never a busy loop):
   ``@@llem-progress`` lines go to the study's progress, the rest to
   ``<run dir>/container/container.log`` (whose first line is the command line);
4. past the deadline, or when the study is interrupted (Ctrl-C), stops and removes the
   container (``docker stop --time 10``, then ``docker rm -f``) and its client;
5. deletes the env-file, and reads the outcome: ``result.json`` in the run directory
   (written by the orchestrator inside the container) is a completed experiment;
   ``error.json`` or a non-zero exit is a failure, recorded with the error and the tail of
   the container's log.

The outcome is the same `study.child.Outcome` a local child gives, so the manifest, the
failure files, the consecutive-failure rule and resume behave exactly as for local runs.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llenergymeasure.domain.results import RunnerContext
from llenergymeasure.exceptions import ConfigError, PreflightError
from llenergymeasure.results.filenames import RESULT_FILENAME, default_experiment_name
from llenergymeasure.results.persistence import new_run_dir, read_result
from llenergymeasure.study import docker as dk
from llenergymeasure.study import recovery
from llenergymeasure.study.child import Outcome, ProgressSink
from llenergymeasure.study.exchange import (
    CONTAINER_CACHE_HOME,
    CONTAINER_EXCHANGE_DIR,
    CONTAINER_HF_HOME,
    CONTAINER_RUN_DIR,
    LOG_FILENAME,
    exchange_dir,
    parse_progress_line,
    read_error,
    request_for,
    write_request,
)
from llenergymeasure.study.worker import WorkerRequest, result_summary

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.study.manifest import RunnerInfo

EXIT_GRACE_S = 60.0  # after the container's output ends, how long its client may take to exit
CLIENT_KILL_GRACE_S = 5.0  # after the container is removed, before the client is killed
LOG_TAIL_LINES = 60


class DockerRunner:
    """Runs experiments in containers of one image (see module docstring)."""

    kind = "docker"

    def __init__(
        self,
        image: str,
        *,
        user_config: UserConfig | None = None,
        docker: str = dk.DOCKER,
        environ: Mapping[str, str] | None = None,
        stop_grace_s: int = dk.STOP_GRACE_S,
    ) -> None:
        self.image = image
        self.user_config = user_config
        self.docker = docker
        self._environ = environ
        self.stop_grace_s = stop_grace_s
        self._image_info: dk.ImageInfo | None = None
        self._host_gpus: int | None = None

    @property
    def spec(self) -> str:
        """The runner as the user config names it."""
        return f"{dk.RUNNER_PREFIX}{self.image}"

    @property
    def environ(self) -> Mapping[str, str]:
        """The host environment the runner reads (GPUs, secrets, HF settings)."""
        return os.environ if self._environ is None else self._environ

    # ---- before the study ------------------------------------------------------------
    def host_gpu_count(self) -> int:
        """GPUs on the host (cached): decides what ``device: auto`` gets."""
        if self._host_gpus is None:
            self._host_gpus = dk.host_gpu_count()
        return self._host_gpus

    def needs_gpu(self, config: ExperimentConfig) -> bool:
        """Whether this experiment's container gets GPUs."""
        return dk.wants_gpu(config, self.host_gpu_count())

    def use_image_info(self, info: dk.ImageInfo | None) -> None:
        """Keep what pre-flight found about the image (its id and digests)."""
        self._image_info = info

    def image_info(self, backend: str) -> dk.ImageInfo:
        """The image's id and digests (inspected once); PreflightError if it is absent."""
        if self._image_info is None:
            try:
                found = dk.inspect_image(self.image, self.docker)
            except dk.DockerError as e:
                raise PreflightError([f"image {self.image!r}: {e}"]) from e
            if found is None:
                raise PreflightError([dk.missing_image_problem(backend, self.image)])
            self._image_info = found
        return self._image_info

    def remove_leftovers(self, study_dir: Path) -> list[str]:
        """Stop and remove containers an earlier run of this study left (its process died
        before it could): their experiments run again. The messages to show."""
        notes = []
        for name in dk.study_containers(study_dir, self.docker):
            dk.stop_and_remove(name, self.docker, self.stop_grace_s)
            notes.append(f"removed container {name} left by an earlier run of this study")
        return notes

    # ---- one experiment ----------------------------------------------------------------
    def run(
        self,
        request: WorkerRequest,
        timeout_s: float,
        on_progress: ProgressSink,
        on_start: Callable[[RunnerInfo], None] | None = None,
    ) -> Outcome:
        """Run ``request`` in a container; its outcome (see module docstring).

        ``on_start`` learns the container's name (``RunnerInfo.job_id``) once its client
        runs: a resume finds it by the study's label and removes it. KeyboardInterrupt stops
        and removes the container, then propagates.
        """
        t0 = time.monotonic()
        run_dir = self._run_dir(request)
        name = dk.container_name(run_dir)
        env_file: Path | None = None
        try:
            exchange = exchange_dir(run_dir)
            exchange.mkdir(parents=True, exist_ok=True)
            routing = dk.route_gpus(
                request.config, self.environ.get("CUDA_VISIBLE_DEVICES"), self.host_gpu_count()
            )
            info = self.image_info(request.config.backend)
            context = RunnerContext(
                kind="docker",
                spec=self.spec,
                image=self.image,
                image_id=info.id,
                image_repo_digests=list(info.repo_digests),
                container_name=name,
                gpu_devices=routing.devices,
            )
            write_request(exchange, self._request(request, context, routing))
            env_file = dk.write_env_file(dk.secrets_from(self.environ))
            argv = dk.docker_run_argv(self._docker_run(request, run_dir, name, routing, env_file))
        except (ConfigError, PreflightError, ValueError, OSError) as e:
            dk.remove_env_file(env_file)
            return _not_started(e, time.monotonic() - t0)
        try:
            return self._supervise(argv, name, run_dir, timeout_s, on_progress, t0, on_start)
        finally:
            dk.remove_env_file(env_file)

    def _run_dir(self, request: WorkerRequest) -> Path:
        """The attempt's run directory: the study's (when it made one) or a new one."""
        if request.run_dir is not None:
            Path(request.run_dir).mkdir(parents=True, exist_ok=True)
            return Path(request.run_dir)
        config = request.config
        base = request.results_dir / config.output_dir if config.output_dir else request.results_dir
        name = config.name or default_experiment_name(config.model, config.backend)
        return new_run_dir(base, name)

    def _request(
        self, request: WorkerRequest, context: RunnerContext, routing: dk.GpuRouting
    ) -> Any:
        """The exchange request for ``request``."""
        uc = self.user_config.model_dump(mode="json") if self.user_config is not None else None
        return request_for(
            request.config,
            provenance=request.provenance,
            label=request.label,
            position=request.position,
            cycle=request.cycle,
            verbosity=request.verbosity,
            user_config=uc,
            runner=context,
            gpu_ordinals=routing.ordinals,
        )

    def _docker_run(
        self,
        request: WorkerRequest,
        run_dir: Path,
        name: str,
        routing: dk.GpuRouting,
        env_file: Path | None,
    ) -> dk.DockerRun:
        """The DockerRun of one attempt."""
        hf_home = dk.host_hf_home(self.environ)
        llem_cache = dk.host_llem_cache()
        for folder in (hf_home, llem_cache):  # docker would make missing ones owned by root
            folder.mkdir(parents=True, exist_ok=True)
        run_dir = Path(run_dir).resolve()
        study_dir = Path(request.results_dir).resolve()
        labels = (
            (dk.LABEL_STUDY_DIR, str(study_dir)),
            ("llem.run_dir", str(run_dir)),
            ("llem.position", str(request.position)),
            ("llem.cycle", str(request.cycle)),
            ("llem.config_hash", _hash_of(request)),
        )
        inputs, workdir = dk.input_mounts(request.config, Path.cwd())
        mounts = (
            dk.Mount(run_dir, CONTAINER_RUN_DIR),
            dk.Mount(exchange_dir(run_dir), CONTAINER_EXCHANGE_DIR),
            dk.Mount(hf_home.resolve(), CONTAINER_HF_HOME),
            dk.Mount(llem_cache.resolve(), f"{CONTAINER_CACHE_HOME}/llenergymeasure"),
            *inputs,
        )
        return dk.DockerRun(
            image=self.image,
            name=name,
            mounts=mounts,
            env=dk.container_env(routing, self.environ),
            env_file=env_file,
            labels=labels,
            gpus=routing.gpus_flag,
            user=dk.current_user(),
            workdir=workdir,
            command=dk.entrypoint_command(),
            docker=self.docker,
        )

    def _supervise(
        self,
        argv: list[str],
        name: str,
        run_dir: Path,
        timeout_s: float,
        on_progress: ProgressSink,
        t0: float,
        on_start: Callable[[RunnerInfo], None] | None,
    ) -> Outcome:
        """Start the container's client, pump its output until it ends or the deadline."""
        log_path = exchange_dir(run_dir) / LOG_FILENAME
        with open(log_path, "ab") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())  # no secret: they are in the env-file
            log.flush()
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a terminal's Ctrl-C reaches us, not it: we stop it
                )
            except OSError as e:
                detail = f"could not start `{argv[0]}`: {e}"
                return Outcome(False, time.monotonic() - t0, reason=detail, detail=detail)
            try:
                if on_start is not None:
                    on_start(_container_runner(process.pid, name))
                ended = _pump(process, t0 + timeout_s, on_progress, log)
                if not ended:
                    notes = dk.stop_and_remove(name, self.docker, self.stop_grace_s)
                    _reap(process)
                    log.flush()
                    return self._timeout(
                        timeout_s, time.monotonic() - t0, name, argv, notes, log_path
                    )
                code = _wait(process, EXIT_GRACE_S)
            except BaseException:
                dk.stop_and_remove(name, self.docker, self.stop_grace_s)
                _reap(process)
                raise
            finally:
                if process.stdout is not None:
                    process.stdout.close()
        return self._outcome(code, time.monotonic() - t0, name, argv, run_dir, log_path)

    def _outcome(
        self,
        code: int | None,
        wall_s: float,
        name: str,
        argv: list[str],
        run_dir: Path,
        log_path: Path,
    ) -> Outcome:
        """Interpret the run directory, error.json and the exit code."""
        error = read_error(exchange_dir(run_dir))
        result_path = run_dir / RESULT_FILENAME
        context = self._context_text(name, argv, log_path)
        if error is None and code == 0 and result_path.is_file():
            try:
                result = read_result(result_path)
            except (OSError, ValueError) as e:
                reason = f"the container's result is unreadable: {e}"
                return Outcome(False, wall_s, reason=reason[:300], detail=f"{reason}\n{context}")
            if not result.failed:
                return Outcome(
                    True, wall_s, result_path=result_path, summary=result_summary(result)
                )
        if error is not None:
            detail = f"{error.traceback or error.reason}\n{context}"
            return Outcome(False, wall_s, reason=error.reason, detail=detail)
        reason = _exit_reason(code)
        detail = (
            f"The container {reason} without writing a result or an error.\n"
            f"{_exit_hint(code)}\n{context}"
        )
        return Outcome(False, wall_s, reason=reason, detail=detail)

    def _timeout(
        self,
        timeout_s: float,
        wall_s: float,
        name: str,
        argv: list[str],
        notes: list[str],
        log_path: Path,
    ) -> Outcome:
        """A container stopped and removed for running past the per-experiment timeout."""
        reason = f"timed out after {timeout_s:g} s"
        detail = (
            f"The experiment did not finish within execution.experiment_timeout_seconds="
            f"{timeout_s:g} (this covers container start-up, model load, warm-up and "
            f"measurement); the container {name} was stopped and removed:\n"
            + "".join(f"  {n}\n" for n in notes)
            + self._context_text(name, argv, log_path)
        )
        return Outcome(False, wall_s, reason=reason, detail=detail)

    def _context_text(self, name: str, argv: list[str], log_path: Path) -> str:
        """Container, command line and log tail, for a failure file."""
        tail = _tail(log_path, LOG_TAIL_LINES)
        return (
            f"\ncontainer: {name} (image {self.image})\n"
            f"command: {shlex.join(argv)}\n"
            f"log: {log_path} (last {LOG_TAIL_LINES} lines)\n"
            + "".join(f"  | {line}\n" for line in tail)
        )


# ---- helpers -------------------------------------------------------------------------------
def _container_runner(client_pid: int, name: str) -> RunnerInfo:
    """Who runs an attempt in a container: the container (``job_id``) and its client."""
    from llenergymeasure.study.manifest import RunnerInfo

    info = recovery.local_runner(client_pid)
    return RunnerInfo(
        kind="docker",
        host=info.host,
        pid=info.pid,
        start_time=info.start_time,
        job_id=name,
        study_pid=info.study_pid,
    )


def _not_started(error: Exception, wall_s: float) -> Outcome:
    """The container could not be started (bad GPU ordinal, image gone, unmountable path)."""
    text = str(error)
    lines = [ln.strip(" -") for ln in text.splitlines() if ln.strip(" -")]
    reason = lines[-1] if lines else type(error).__name__
    return Outcome(False, wall_s, reason=f"container not started: {reason}"[:300], detail=text)


def _hash_of(request: WorkerRequest) -> str:
    """The config hash of the request's experiment (a container label)."""
    from llenergymeasure.config.hashing import config_hash

    return config_hash(request.config)


def _pump(
    process: subprocess.Popen[bytes], deadline: float, on_progress: ProgressSink, log: IO[bytes]
) -> bool:
    """Read the client's output until it ends (True) or the deadline passes (False).
    Blocks in select with the time left: never spins."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return False
            chunk = os.read(fd, 65536)
            if not chunk:
                if pending:
                    _line(pending, on_progress, log)
                log.flush()
                return True
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                _line(line, on_progress, log)
            log.flush()


def _line(raw: bytes, on_progress: ProgressSink, log: IO[bytes]) -> None:
    """One output line: progress to the study, anything else to the log."""
    message = parse_progress_line(raw.decode("utf-8", errors="replace").rstrip("\r"))
    if message is not None:
        on_progress(message)
    else:
        log.write(raw + b"\n")


def _wait(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The client's exit code, once its output has ended (None if it does not exit)."""
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _reap(process)
        return None


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Wait a little for the client to exit (its container is gone), then kill it."""
    try:
        process.wait(timeout=CLIENT_KILL_GRACE_S)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _exit_reason(code: int | None) -> str:
    """``container exited with code N`` (docker's own codes named)."""
    if code is None:
        return "container client did not exit"
    if code < 0:
        return f"container client killed by signal {-code}"
    return f"container exited with code {code}"


def _exit_hint(code: int | None) -> str:
    """What an exit code usually means."""
    hints = {
        125: "Exit code 125: docker could not create or start the container (see the log).",
        126: "Exit code 126: the command in the image could not be run.",
        127: "Exit code 127: python3 (or llenergymeasure) is not in the image: build it from "
        "docker/ in this repository.",
        137: "Exit code 137: the container was killed (SIGKILL): out of memory, or stopped.",
        139: "Exit code 139: a crash in native code (SIGSEGV).",
    }
    return hints.get(code or 0, "See the container log below.")


def _tail(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a text file ([] if unreadable)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-n:]
