"""End to end: `llem run examples/quickstart.yaml` on the CPU, through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llenergymeasure.cli.app import app

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


@pytest.mark.slow
def test_quickstart_runs_end_to_end_and_prints_a_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), "-n", "4", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.stderr + result.stdout
    out = result.stdout
    assert "Experiment quickstart (completed" in out
    assert re.search(r"prompts\s+4\b", out)
    assert re.search(r"throughput\s+[\d.,]+ output tok/s", out)
    assert re.search(r"TTFT\s+[\d.]+ / [\d.]+ / [\d.]+ ms", out)
    assert re.search(r"energy\s+(not measured: .+|[\d.,]+ J \((counter|polled|estimate), )", out)
    run_dirs = list(tmp_path.glob("quickstart_*"))
    assert len(run_dirs) == 1
    assert f"results                {run_dirs[0]}" in out
    saved = json.loads((run_dirs[0] / "result.json").read_text())
    assert saved["config"]["n"] == 4
    assert saved["provenance"]["n"] == "cli" and saved["provenance"]["model"] == "file"
    assert "loading model" in result.stderr  # progress goes to stderr, not stdout
    assert "loading model" not in out
