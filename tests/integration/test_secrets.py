"""No secrets at rest (issue 11, case 10): a credential in passthrough_kwargs never reaches
result.json, the manifest, the summary, failure files or the logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from study_helpers import TINY_BASE, only_study_dir
from typer.testing import CliRunner

from llenergymeasure.cli.app import app
from llenergymeasure.config.models import StudyConfig
from llenergymeasure.redaction import is_credential_key, redact, register_secrets, scrub
from llenergymeasure.study.runner import StudyRunner
from llenergymeasure.testing import FaultPlan

SECRET = "hf_SuperSecretValue1234567890"


def _everything_written(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("key", "credential"),
    [
        ("token", True),
        ("hf_token", True),
        ("api_key", True),
        ("use_auth_token", True),
        ("accessKey", True),
        ("password", True),
        ("client_secret", True),
        ("max_input_tokens", False),
        ("max_num_batched_tokens", False),
        ("kv_cache_dtype", False),
        ("monkey", False),
        ("keyword", False),
    ],
)
def test_credential_keys_are_words_not_substrings(key: str, credential: bool) -> None:
    assert is_credential_key(key) is credential


def test_redact_and_scrub() -> None:
    data = {"n": 2, "passthrough_kwargs": {"token": SECRET, "auth": {"user": "u", "pw": "x"}}}
    assert redact(data) == {"n": 2, "passthrough_kwargs": {"token": "***", "auth": "***"}}
    assert data["passthrough_kwargs"]["token"] == SECRET  # a copy: the run keeps its value
    register_secrets([SECRET])
    assert scrub(f"401 for token {SECRET}!") == "401 for token ***!"


@pytest.mark.slow
def test_a_single_experiment_stores_and_logs_no_credential(tmp_path: Path) -> None:
    config = {**TINY_BASE, "passthrough_kwargs": {"token": SECRET}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "results"

    result = CliRunner().invoke(app, ["run", str(path), "-o", str(out), "-v"])

    # transformers refuses the unknown generate kwarg: a failed run, a traceback, logs
    assert result.exit_code == 1, result.output
    assert "Traceback" in result.stderr
    assert SECRET not in result.output
    written = _everything_written(out)
    assert '"token": "***"' in written and SECRET not in written


@pytest.mark.slow
def test_a_study_stores_no_credential_in_any_file(tmp_path: Path) -> None:
    study = StudyConfig(
        study_name="secret",
        base={**TINY_BASE, "passthrough_kwargs": {"token": SECRET}},
        sweep={"max_output_tokens": [2, 3], "passthrough_kwargs.api_key": [SECRET + "x"]},
        execution={"max_consecutive_failures": 10},
    )
    plan = FaultPlan(fake_result=True, raise_on=("max_output_tokens=3",))

    result = StudyRunner(study, results_dir=tmp_path, worker_target=plan.target()).run()

    assert result.counts.completed == 1 and result.counts.failed == 1
    written = _everything_written(only_study_dir(tmp_path))
    assert SECRET not in written
    assert "***" in written
    assert result.configs[0].key_fields.get("passthrough_kwargs.api_key") in (None, "***")


def test_failure_files_and_error_lines_are_scrubbed(tmp_path: Path) -> None:
    from llenergymeasure.study.child import Outcome
    from llenergymeasure.study.manifest import ManifestEntry
    from llenergymeasure.study.runner import _write_failure

    register_secrets([SECRET])
    entry = ManifestEntry(position=0, cycle=1, config_hash="h", label="x")
    outcome = Outcome(ok=False, wall_s=1.0, reason=f"HTTP 401 ({SECRET})", detail=SECRET)

    path = _write_failure(tmp_path, entry, outcome)

    assert SECRET not in path.read_text() and "***" in path.read_text()
