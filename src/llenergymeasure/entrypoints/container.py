"""``python -m llenergymeasure.entrypoints.container``: one experiment inside a container.

The study runner (`study.docker_runner`) starts one ephemeral container per experiment
attempt with the run directory mounted at ``/llem/run`` and the exchange directory at
``/llem/exchange`` (`study.exchange` describes both). This entry point reads
``request.json``, runs the experiment through the orchestrator — pre-flight, energy
session on the GPUs the container was given (NVML works inside with the NVIDIA runtime),
window, metrics — and the orchestrator writes ``result.json`` (and the timeline) into the
run directory exactly as a local run would. On failure it writes ``error.json`` into the
exchange directory (the orchestrator has then also written a failed ``result.json`` if it
got as far as the run directory).

Progress goes to stdout as ``@@llem-progress`` lines, which the runner forwards to the
study's progress display; logs go to stderr. Exit codes: 0 completed; 1 the experiment
failed (error.json); 2 the request could not be read (error.json when the directory is
writable); 130 interrupted.

Paths default to the container's mount points; ``--exchange`` and ``--run-dir`` move them
(the test suite's fake ``docker`` runs this module on the host with the host paths).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from llenergymeasure.study.exchange import (
    CONTAINER_EXCHANGE_DIR,
    CONTAINER_RUN_DIR,
    ContainerRequest,
    ErrorReport,
    progress_line,
    read_request,
    write_error,
)
from llenergymeasure.study.worker import PromptsMessage, StageMessage

if TYPE_CHECKING:
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.progress import ExperimentTick

EXIT_OK, EXIT_FAILED, EXIT_BAD_REQUEST, EXIT_INTERRUPTED = 0, 1, 2, 130


class StdoutProgress:
    """A Progress that prints stage and prompt progress as ``@@llem-progress`` lines."""

    def _print(self, line: str) -> None:
        # If nobody reads stdout any more, the result still lands on disk.
        with contextlib.suppress(OSError, ValueError):
            print(line, flush=True)

    def stage(self, name: str) -> None:
        """A new stage began."""
        self._print(progress_line(StageMessage(name)))

    def prompts_done(self, done: int, total: int) -> None:
        """Measured prompts completed so far."""
        self._print(progress_line(PromptsMessage(done, total)))

    def experiment_started(self, tick: ExperimentTick) -> None:
        """Not used inside one experiment."""

    def experiment_finished(self, tick: ExperimentTick, status: str, detail: str = "") -> None:
        """Not used inside one experiment."""

    def message(self, text: str) -> None:
        """Study-level messages are the host's to show; log them here."""
        print(text, file=sys.stderr, flush=True)


def run_request(request: ContainerRequest, run_dir: Path) -> ExperimentResult:
    """Run the requested experiment with ``run_dir`` as its run directory."""
    from llenergymeasure.config.user_config import UserConfig, load_user_config
    from llenergymeasure.orchestration.orchestrator import ExperimentOrchestrator

    user_config = (
        UserConfig.model_validate(request.user_config)
        if request.user_config is not None
        else load_user_config()
    )
    translated = request.gpu_ordinals is not None
    orchestrator = ExperimentOrchestrator(
        request.config_in_container(),
        request.provenance,
        results_dir=run_dir.parent,
        progress=StdoutProgress(),
        user_config=user_config,
        run_dir=run_dir,
        runner=request.runner,
        recorded_config=request.experiment_config() if translated else None,
        process_exits=True,  # one experiment per container: its exit frees the memory
    )
    return orchestrator.run()


def main(argv: list[str] | None = None) -> int:
    """Run the experiment of ``--exchange``/request.json; the exit code (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m llenergymeasure.entrypoints.container",
        description="Run one llem experiment from an exchange directory (inside a container).",
    )
    parser.add_argument("--exchange", type=Path, default=Path(CONTAINER_EXCHANGE_DIR))
    parser.add_argument("--run-dir", type=Path, default=Path(CONTAINER_RUN_DIR))
    args = parser.parse_args(argv)
    exchange: Path = args.exchange
    try:
        request = read_request(exchange)
    except Exception as e:
        _report(exchange, e)
        return EXIT_BAD_REQUEST
    if request.verbosity is not None:
        from llenergymeasure.logging import setup_logging

        setup_logging(request.verbosity)
    try:
        run_request(request, args.run_dir)
    except KeyboardInterrupt as e:
        _report(exchange, e)
        return EXIT_INTERRUPTED
    except BaseException as e:  # SystemExit too: the host must learn why
        _report(exchange, e)
        return EXIT_FAILED
    return EXIT_OK


def _report(exchange: Path, error: BaseException) -> None:
    """Write error.json (never raises) and echo the reason on stderr for the log."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    report = ErrorReport(reason=_one_line(error), traceback=text, error_type=type(error).__name__)
    print(text, file=sys.stderr, flush=True)
    try:
        write_error(exchange, report)
    except OSError as e:
        print(f"could not write {exchange}/error.json: {e}", file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    """``Type: first line of message``, at most 300 characters."""
    text = str(error).strip().splitlines()
    head = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return head[:300]


if __name__ == "__main__":
    sys.exit(main())
