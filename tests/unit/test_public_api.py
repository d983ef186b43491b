"""The public API is exactly what the README's Library section documents, and every name resolves."""

from __future__ import annotations

import inspect

import llenergymeasure

SPEC_PUBLIC_API = {
    "run_experiment",
    "run_study",
    "ExperimentConfig",
    "StudyConfig",
    "ExperimentResult",
    "StudyResult",
    "__version__",
    "load_results",
    "report",
}


def test_all_is_exactly_the_documented_api() -> None:
    assert set(llenergymeasure.__all__) == SPEC_PUBLIC_API
    assert len(llenergymeasure.__all__) == len(SPEC_PUBLIC_API)


def test_every_public_name_resolves() -> None:
    from pydantic import BaseModel

    for name in SPEC_PUBLIC_API - {"__version__"}:
        value = getattr(llenergymeasure, name)
        if name.startswith("run_") or name in ("load_results", "report"):
            assert inspect.isfunction(value), name
        else:
            assert issubclass(value, BaseModel), name


def test_version_matches_the_installed_metadata_or_pyproject() -> None:
    import re
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M)
    assert declared is not None
    assert llenergymeasure.__version__ == declared[1]


def test_run_functions_take_config_results_dir_and_progress() -> None:
    for fn in (llenergymeasure.run_experiment, llenergymeasure.run_study):
        params = inspect.signature(fn).parameters
        assert next(iter(params)) == "config"
        assert {"results_dir", "progress"} <= set(params)


def test_unknown_attribute_raises_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError):
        llenergymeasure.no_such_name  # noqa: B018
