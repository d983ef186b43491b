"""`llem run` through the CLI: dry-run plans, bad input (exit 2), runtime errors and interrupts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llenergymeasure.cli.app import app
from llenergymeasure.cli.commands import run as run_cmd
from llenergymeasure.exceptions import ExperimentError

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "examples" / "study.yaml"
CONFIGS = [(p, b) for p in ("fp32", "bf16") for b in (1, 4, 8)]  # sweep key order: precision, batch
ROW = re.compile(r"^(\d+)\s+(\d+)/(\d+)\s+precision=(\w+) batch_size=(\d+)\s+([0-9a-f]{8})\s")

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    """Run `llem <args>` in-process; (exit code, stdout, stderr)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def plan_rows(stdout: str) -> list[tuple[int, int, str, int]]:
    """(position, cycle, precision, batch) of each row of a dry-run table."""
    rows = [ROW.match(line) for line in stdout.splitlines()]
    return [(int(m[1]), int(m[2]), m[4], int(m[5])) for m in rows if m]


# ---- dry runs -------------------------------------------------------------------------------


def test_dry_run_study_lists_12_experiments_interleaved() -> None:
    code, out, err = invoke("run", str(STUDY), "--dry-run")
    assert code == 0, err
    rows = plan_rows(out)
    expected = [(i + 1, i // 6 + 1, *CONFIGS[i % 6]) for i in range(12)]
    assert rows == expected
    assert "Total: 12 experiments = 6 configs x 2 cycles" in out
    assert re.search(r"= \d+\.\d+ GB", out), "memory estimate missing"


def test_dry_run_names_the_runners_when_one_is_a_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, _ = invoke("run", str(STUDY), "--dry-run")
    assert code == 0 and "Runners:" not in out  # all local: nothing to say
    monkeypatch.setenv("LLEM_RUNNERS__PYTORCH", "docker:llem-pytorch")
    code, out, err = invoke("run", str(STUDY), "--dry-run")
    assert code == 0, err
    assert "Runners: pytorch -> docker:llem-pytorch (one container per experiment" in out


def test_dry_run_grouped_runs_all_cycles_of_a_config_together() -> None:
    code, out, _ = invoke("run", str(STUDY), "--dry-run", "--order", "grouped")
    assert code == 0
    rows = plan_rows(out)
    expected = [(i + 1, i % 2 + 1, *CONFIGS[i // 2]) for i in range(12)]
    assert rows == expected


def test_dry_run_shuffled_permutes_each_cycle_and_records_the_seed() -> None:
    code, out, _ = invoke("run", str(STUDY), "--dry-run", "--order", "shuffled")
    assert code == 0
    seed = re.search(r"shuffle seed (\d+)", out)
    assert seed is not None
    rows = plan_rows(out)
    assert [r[1] for r in rows] == [1] * 6 + [2] * 6
    for cycle in (1, 2):
        assert sorted(r[2:] for r in rows if r[1] == cycle) == sorted(CONFIGS)


def test_dry_run_shuffled_with_a_seed_is_reproducible(tmp_path: Path) -> None:
    study = tmp_path / "seeded.yaml"
    study.write_text(
        STUDY.read_text().replace("order: interleaved", "order: shuffled\n  shuffle_seed: 123")
    )
    first = invoke("run", str(study), "--dry-run")[1]
    second = invoke("run", str(study), "--dry-run")[1]
    assert "shuffle seed 123" in first
    assert plan_rows(first) == plan_rows(second)
    interleaved = [(i + 1, i // 6 + 1, *CONFIGS[i % 6]) for i in range(12)]
    assert plan_rows(first) != interleaved


def test_dry_run_cycles_override_and_batch_size_override(tmp_path: Path) -> None:
    code, out, err = invoke(
        "run", "--model", "tiny-llama", "-n", "5", "--batch-size", "3", "--cycles", "3", "--dry-run"
    )
    assert code == 0, err
    assert "Total: 3 experiments = 1 configs x 3 cycles" in out


def test_dry_run_does_not_import_torch_as_a_subprocess() -> None:
    code = (
        "import sys\n"
        "from llenergymeasure.cli.app import main\n"
        f"try:\n    main(['run', {str(STUDY)!r}, '--dry-run'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert len(plan_rows(proc.stdout)) == 12


def test_python_m_llenergymeasure_dry_run_subprocess() -> None:
    proc = _python("-m", "llenergymeasure", "run", str(STUDY), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert [r[0] for r in plan_rows(proc.stdout)] == list(range(1, 13))


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the interpreter with the package's source on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=60, cwd=REPO
    )


# ---- bad input: exit 2, the problem and the fix, no traceback -------------------------------

BAD_FILES = {
    "typo": ("modle: tiny-llama\n", ["modle", "did you mean 'model'"]),
    "wrong_type": ("model: tiny-llama\nn: lots\n", [":2", "n:", "integer"]),
    "missing_model": ("backend: pytorch\nn: 5\n", ["model", "required", "add `model:"]),
    "section_mismatch": (
        "model: tiny-llama\nbackend: pytorch\nvllm:\n  max_num_seqs: 4\n",
        ["vllm", "backend is 'pytorch'", "remove the section"],
    ),
    "precision": ("model: tiny-llama\nprecision: fp8\n", ["fp8", "use one of fp32"]),
    "yaml_syntax": ("model: tiny-llama\nn: [1,\nprecision: fp32\n", ["YAML syntax", ".yaml:"]),
    "empty": ("", ["empty", "model:"]),
    "absurd_n": ("model: tiny-llama\nn: 100000000\n", ["n:", "1,000,000"]),
    "negative_n": ("model: tiny-llama\nn: -3\n", ["n:", ">= 1"]),
    "study_name_escape": (
        "study_name: ../evil\nbase: {model: tiny-llama}\n",
        ["study_name", "not a safe directory name"],
    ),
    "output_escape": (
        "model: tiny-llama\noutput_dir: ../../x\n",
        ["output_dir", "escape the results directory"],
    ),
}


def assert_config_error(code: int, out: str, err: str, needles: list[str]) -> None:
    """Exit 2, every needle on stderr, no traceback anywhere, nothing on stdout."""
    assert code == 2, (code, out, err)
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in out + err
    assert "->" in err, "the message should say how to fix it"


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_file_exits_2_with_problem_and_fix(case: str, tmp_path: Path) -> None:
    text, needles = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    assert_config_error(*invoke("run", str(path), "--dry-run"), needles)


def test_yaml_syntax_error_shows_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: tiny-llama\nprecision: : fp32\n")
    code, _, err = invoke("run", str(path))
    assert code == 2
    assert re.search(r"bad\.yaml:2\b", err), err


def test_missing_file_and_directory_exit_2(tmp_path: Path) -> None:
    assert_config_error(*invoke("run", str(tmp_path / "nope.yaml")), ["nope.yaml", "not found"])
    assert_config_error(*invoke("run", str(tmp_path)), ["is a directory"])


def test_extends_cycle_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("_extends: b.yaml\nmodel: tiny-llama\n")
    (tmp_path / "b.yaml").write_text("_extends: a.yaml\n")
    assert_config_error(*invoke("run", str(tmp_path / "a.yaml")), ["_extends", "cycle"])


def test_negative_n_on_the_command_line_exits_2() -> None:
    assert_config_error(*invoke("run", "-m", "tiny-llama", "-n", "-5", "--dry-run"), ["n:", "-5"])


def test_unknown_backend_option_exits_2() -> None:
    code, out, err = invoke("run", "-m", "tiny-llama", "-b", "pytorh", "--dry-run")
    assert code == 2 and "Traceback" not in out + err
    assert "pytorch" in err


def test_no_config_and_no_model_is_a_usage_error_with_a_fix() -> None:
    code, out, err = invoke("run")
    assert code == 2
    assert "llem run examples/quickstart.yaml" in err
    assert "Traceback" not in out + err


def test_bad_option_value_is_a_usage_error() -> None:
    code, _, err = invoke("run", str(STUDY), "--order", "sideways", "--dry-run")
    assert code == 2
    assert "sideways" in err


def test_resume_on_a_single_experiment_is_refused() -> None:
    code, _, err = invoke("run", "-m", "tiny-llama", "--resume")
    assert code == 2
    assert "studies only" in err


# ---- runtime failures and interrupts --------------------------------------------------------


def _raise(exc: BaseException):  # type: ignore[no-untyped-def]
    def fake(*args: object, **kwargs: object) -> None:
        raise exc

    return fake


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_cmd, "_run_experiment", _raise(KeyboardInterrupt()))
    code, out, err = invoke("run", "-m", "tiny-llama", "-n", "2")
    assert code == 130
    assert "Interrupted" in err and "Traceback" not in out + err


def test_runtime_llem_error_exits_1_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_cmd, "_run_experiment", _raise(ExperimentError("GPU fell over")))
    code, out, err = invoke("run", "-m", "tiny-llama", "-n", "2")
    assert code == 1
    assert "Error: GPU fell over" in err and "Traceback" not in out + err


def test_verbose_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_cmd, "_run_experiment", _raise(ExperimentError("GPU fell over")))
    code, _, err = invoke("run", "-m", "tiny-llama", "-n", "2", "-v")
    assert code == 1
    assert "Traceback" in err and "GPU fell over" in err


def test_unexpected_exception_exits_1_and_says_how_to_see_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_cmd, "_run_experiment", _raise(ZeroDivisionError("oops")))
    code, out, err = invoke("run", "-m", "tiny-llama", "-n", "2")
    assert code == 1
    assert "ZeroDivisionError: oops" in err and "-v" in err
    assert "Traceback" not in out + err


def test_main_maps_exit_codes_like_the_console_script(monkeypatch: pytest.MonkeyPatch) -> None:
    from llenergymeasure.cli.app import main

    monkeypatch.setattr(run_cmd, "_run_experiment", _raise(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as info:
        main(["run", "-m", "tiny-llama"])
    assert info.value.code == 130


def test_study_options_route_to_run_study(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_study(request, no_gaps, resume, resume_dir, retry_failed=False):  # type: ignore[no-untyped-def]
        seen.update(overrides=request.overrides, no_gaps=no_gaps, resume=resume)

    monkeypatch.setattr(run_cmd, "_run_study", fake_study)
    code, _, err = invoke("run", str(STUDY), "--cycles", "3", "--no-gaps")
    assert code == 0, err
    assert seen == {"overrides": {"execution.n_cycles": 3}, "no_gaps": True, "resume": False}


def test_batch_size_maps_to_the_backend_field() -> None:
    loaded = run_cmd.load(None, {"model": "tiny-llama", "backend": "vllm"}, 16)
    assert loaded.cli_overrides["vllm"]["max_num_seqs"] == 16
    assert loaded.experiment is not None
    assert loaded.experiment.vllm is not None and loaded.experiment.vllm.max_num_seqs == 16
    assert loaded.provenance["vllm.max_num_seqs"] == "cli"


@pytest.mark.parametrize(
    "example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_example_validates_in_a_dry_run(example: Path) -> None:
    code, out, err = invoke("run", str(example), "--dry-run")
    assert code == 0, err
    assert "Nothing was run." in out


def test_explicit_study_example_reports_the_skipped_entry() -> None:
    code, out, _ = invoke("run", str(REPO / "examples" / "study_explicit.yaml"), "--dry-run")
    assert code == 0
    assert "Skipped grid points (1):" in out and "fp8" in out
    assert "Total: 2 experiments = 2 configs x 1 cycles; 1 skipped" in out


@pytest.mark.parametrize(
    ("status", "failed", "code"),
    [("completed", 0, 0), ("completed", 1, 1), ("stopped", 0, 1), ("interrupted", 0, 130)],
)
def test_study_exit_code(status: str, failed: int, code: int) -> None:
    assert run_cmd.study_exit_code(status, failed) == code


def test_batch_size_on_a_study_replaces_the_swept_batch_sizes() -> None:
    code, out, err = invoke("run", str(STUDY), "--batch-size", "2", "--dry-run")
    assert code == 0, err
    assert "Total: 4 experiments = 2 configs x 2 cycles" in out
    note = "sweep key 'pytorch.batch_size' replaced by a command-line override"
    assert (out + err).count(note) == 1


@pytest.mark.parametrize(("signum", "code"), [(2, 130), (15, 143), (1, 129)])
def test_a_signalled_study_exits_128_plus_and_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, signum: int, code: int
) -> None:
    import signal

    import llenergymeasure._api as api
    from llenergymeasure.study.signals import Interrupted

    stop = Interrupted(signum, study_dir=Path("results/s_1"))
    monkeypatch.setattr(api, "run_loaded_study", _raise(stop))
    got, out, err = invoke("run", str(STUDY), "--cycles", "3", "--no-gaps")
    assert got == code
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == (
        f"Interrupted by {name}: study marked interrupted, summary of what finished written; "
        f"resume: llem run {STUDY} --cycles 3 --no-gaps --resume-dir results/s_1"
    )
    assert "Traceback" not in out + err
