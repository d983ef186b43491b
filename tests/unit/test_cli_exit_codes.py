"""Bad input exits 2 with one message naming the file or value and the fix, no traceback
(issue 11, case 7; README: exit codes)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llenergymeasure.cli.app import app

TINY = ["-m", "tiny-llama", "-n", "2", "--precision", "fp32"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, err
    return lines[0]


def _dataset(tmp_path: Path, kind: str) -> Path:
    """A dataset file (or directory) with the given problem."""
    if kind == "missing":
        return tmp_path / "missing.jsonl"
    if kind == "directory":
        (tmp_path / "prompts.jsonl").mkdir()
        return tmp_path / "prompts.jsonl"
    if kind == "binary":
        path = tmp_path / "prompts.jsonl"
        path.write_bytes(b'{"prompt": "a"}\n\x00\x01\x02\xff' * 10)
        return path
    if kind == "latin-1":
        path = tmp_path / "prompts.txt"
        path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
        return path
    assert kind == "csv-field-limit"
    path = tmp_path / "prompts.csv"
    path.write_text("prompt\n" + "x" * 200_000 + "\n")
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "no such file -> check the path"),
        ("directory", "is a directory -> point to a prompt file inside it"),
        ("binary", "looks binary"),
        ("latin-1", "is not UTF-8 text (byte 0xe9"),
        ("csv-field-limit", "longer than the csv module's limit"),
    ],
)
def test_bad_dataset_exits_2_naming_the_file_and_the_fix(
    tmp_path: Path, kind: str, expected: str
) -> None:
    path = _dataset(tmp_path, kind)
    code, out, err = invoke("run", *TINY, "-d", str(path), "-o", str(tmp_path / "out"))
    assert code == 2, err
    line = _error_line(err)
    assert expected in line and path.name in line and "->" in line
    assert "Traceback" not in out + err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm installed")
def test_uninstalled_backend_exits_2_with_the_install_command(tmp_path: Path) -> None:
    code, _, err = invoke("run", *TINY, "-b", "vllm", "-o", str(tmp_path))
    assert code == 2
    assert 'pip install "llenergymeasure[vllm]"' in _error_line(err)
    assert "Traceback" not in err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm installed")
def test_dry_run_reports_an_uninstalled_backend_per_experiment_without_importing_it() -> None:
    code, out, err = invoke("run", "-m", "tiny-llama", "-b", "vllm", "--dry-run")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("1 "))
    assert row.endswith("vllm: NOT INSTALLED")
    assert "Backend 'vllm' is not installed" in out and "llenergymeasure[vllm]" in out


def test_wrong_model_name_exits_2_with_a_did_you_mean(tmp_path: Path) -> None:
    code, _, err = invoke("run", "-m", "tiny-lama", "-n", "2", "-o", str(tmp_path))
    assert code == 2
    line = _error_line(err)
    assert "'tiny-lama'" in line and "did you mean 'tiny-llama'?" in line


def test_output_that_is_a_file_exits_2(tmp_path: Path) -> None:
    afile = tmp_path / "results"
    afile.write_text("")
    for target in (afile, afile / "sub"):
        code, _, err = invoke("run", *TINY, "-o", str(target))
        assert code == 2
        line = _error_line(err)
        assert f"{afile} is a file, not a directory" in line and "-o DIR" in line


def test_output_that_is_not_writable_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes anywhere: only a read-only file system stops it
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)],
            capture_output=True,
        )
        if done.returncode != 0:
            pytest.skip("root without permission to mount: cannot make a directory unwritable")
        mounted = True
    else:
        target.chmod(0o555)
    try:
        code, _, err = invoke("run", *TINY, "-o", str(target / "results"))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(target)], check=False)
        else:
            target.chmod(0o755)
    assert code == 2
    line = _error_line(err)
    assert f"{target} is not writable" in line and "-o DIR" in line
    assert ("read-only file system" if mounted else "permission denied") in line
