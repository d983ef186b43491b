"""`import llenergymeasure` and `llem --help` must not import torch or transformers, nor pandas
or plotly (the report extra) (docs/ARCHITECTURE.md).

Each check runs in a fresh interpreter: this test process may already have torch loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
HEAVY = (
    "torch", "transformers", "vllm", "tensorrt_llm", "zeus", "codecarbon", "accelerate",
    "pandas", "plotly",
)  # fmt: skip

CHECK = """
import sys
{body}
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def _heavy_modules_after(body: str) -> list[str]:
    """Run ``body`` in a new interpreter; the heavy modules it left imported."""
    code = CHECK.format(body=body, heavy=HEAVY)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY:"))
    return [m for m in line.removeprefix("HEAVY:").strip().split(",") if m]


def test_import_package_is_light() -> None:
    assert _heavy_modules_after("import llenergymeasure") == []


def test_public_config_names_are_light() -> None:
    assert _heavy_modules_after("from llenergymeasure import ExperimentConfig, StudyConfig") == []


def test_report_and_load_results_import_their_extra_only_when_called() -> None:
    assert _heavy_modules_after("from llenergymeasure import load_results, report") == []


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["run", "--help"], ["config", "--help"], ["--version"], ["config"],
     ["config", "--schema"], ["results", "--help"], ["report", "--help"], ["export", "--help"],
     ["compare", "--help"]],
)  # fmt: skip
def test_cli_help_is_light(argv: list[str]) -> None:
    body = (
        "from llenergymeasure.cli.app import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    assert _heavy_modules_after(body) == []


def test_cli_module_import_pulls_in_no_library_internals() -> None:
    """Commands import the library lazily: loading the CLI loads no config loader or backend."""
    body = (
        "import llenergymeasure.cli.app\n"
        "lazy = [m for m in ('llenergymeasure.config.loader', 'llenergymeasure._api',"
        " 'llenergymeasure.study.grid', 'pydantic') if m in sys.modules]\n"
        "assert not lazy, lazy\n"
    )
    assert _heavy_modules_after(body) == []
