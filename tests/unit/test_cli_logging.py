"""setup_logging: quiet/normal/verbose levels on stderr, idempotent; global -v before a command."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from llenergymeasure.cli.app import app
from llenergymeasure.cli.commands import run as run_cmd
from llenergymeasure.exceptions import ExperimentError
from llenergymeasure.logging import (
    PACKAGE_LOGGER,
    current_verbosity,
    level_for,
    reset_logging,
    setup_logging,
)


@pytest.mark.parametrize(
    ("verbosity", "level"),
    [(-1, logging.WARNING), (0, logging.INFO), (1, logging.DEBUG), (3, logging.DEBUG)],
)
def test_levels(verbosity: int, level: int) -> None:
    assert level_for(verbosity) == level
    assert setup_logging(verbosity).level == level


def test_setup_is_idempotent_and_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(0)
    setup_logging(0)
    logging.getLogger(f"{PACKAGE_LOGGER}.test").info("hello once")
    captured = capsys.readouterr()
    assert captured.err.count("hello once") == 1
    assert captured.out == ""


def test_quiet_hides_info_and_verbose_adds_timestamps(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger(f"{PACKAGE_LOGGER}.test")
    setup_logging(-1)
    log.info("hidden")
    log.warning("shown")
    setup_logging(1)
    log.debug("detail")
    err = capsys.readouterr().err
    assert "hidden" not in err and "WARNING: shown" in err
    assert "DEBUG" in err and "llenergymeasure.test: detail" in err


def test_global_verbose_before_the_command_shows_tracebacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise ExperimentError("boom")

    monkeypatch.setattr(run_cmd, "_run_experiment", boom)
    result = CliRunner().invoke(app, ["-v", "run", "-m", "tiny-llama"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    quiet = CliRunner().invoke(app, ["run", "-m", "tiny-llama"])
    assert "Traceback" not in quiet.stderr


def test_reset_gives_the_logger_back() -> None:
    setup_logging(-1)
    reset_logging()
    logger = logging.getLogger(PACKAGE_LOGGER)
    assert logger.level == logging.NOTSET and logger.propagate
    assert not logger.handlers


def test_current_verbosity_follows_setup_and_reset() -> None:
    assert current_verbosity() is None  # library use: nothing set up
    setup_logging(3)
    assert current_verbosity() == 1  # clamped like the level
    setup_logging(-1)
    assert current_verbosity() == -1
    reset_logging()
    assert current_verbosity() is None


@pytest.mark.parametrize("verbosity", [None, -1, 0, 1])
def test_study_children_get_the_callers_verbosity(
    verbosity: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llenergymeasure import _api
    from llenergymeasure.study import runner as runner_mod

    seen: dict[str, object] = {}

    class Result(str):
        study_dir = "study-dir"

    class Recorder:
        def __init__(self, study: object, **kwargs: object) -> None:
            seen.update(kwargs)

        def run(self) -> str:
            return Result("study result")

    from llenergymeasure.reporting import html as report_html

    reports: list[object] = []
    monkeypatch.setattr(report_html, "write_study_report", lambda d, p: reports.append(d))
    monkeypatch.setattr(runner_mod, "StudyRunner", Recorder)
    if verbosity is not None:
        setup_logging(verbosity)
    assert _api.run_study(model="tiny-llama") == "study result"
    assert seen["verbosity"] == verbosity
    assert [str(d) for d in reports] == ["study-dir"]  # the study's report is written at its end
