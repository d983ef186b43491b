"""User config: file location, defaults, LLEM_* overrides, provenance, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.config.user_config import (
    DEFAULT_CARBON_INTENSITY_GCO2_KWH,
    load_user_config,
    user_config_path,
)
from llenergymeasure.exceptions import ConfigValidationError


def write_user_config(text: str) -> Path:
    """Write the user config at its platform location (XDG_CONFIG_HOME is a tmp dir here)."""
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_path_respects_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_config_path() == tmp_path / "llenergymeasure" / "config.yaml"


def test_missing_file_gives_defaults_all_marked_default() -> None:
    uc = load_user_config()
    assert uc.output.results_dir == "results" and uc.runners == {}
    assert uc.measurement.carbon_intensity_gco2_kwh == DEFAULT_CARBON_INTENSITY_GCO2_KWH
    assert uc.measurement.datacenter_pue == 1.0 and uc.source_path is None
    assert set(uc.provenance.values()) == {"default"}
    assert uc.runner_for("vllm") == "local"


def test_file_values_and_provenance() -> None:
    path = write_user_config(
        "output:\n  results_dir: /data/r\nrunners:\n  vllm: docker:ghcr.io/x/vllm:1\n"
        "measurement:\n  datacenter_pue: 1.3\n"
    )
    uc = load_user_config()
    assert uc.source_path == path and uc.runner_for("vllm") == "docker:ghcr.io/x/vllm:1"
    assert uc.provenance["measurement.datacenter_pue"] == "file"
    assert uc.provenance["runners.vllm"] == "file"
    assert uc.provenance["measurement.carbon_intensity_gco2_kwh"] == "default"
    chosen, defaults = uc.experiment_defaults()
    assert chosen == {"datacenter_pue": 1.3}
    assert defaults == {"carbon_intensity_gco2_kwh": DEFAULT_CARBON_INTENSITY_GCO2_KWH}


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_user_config("measurement:\n  datacenter_pue: 1.3\n")
    monkeypatch.setenv("LLEM_PUE", "1.5")
    monkeypatch.setenv("LLEM_RESULTS_DIR", "out")
    monkeypatch.setenv("LLEM_ENERGY_BACKEND", "zeus")
    monkeypatch.setenv("LLEM_CARBON_INTENSITY", "50")
    monkeypatch.setenv("LLEM_EXECUTION__CYCLE_GAP_SECONDS", "5")
    monkeypatch.setenv("LLEM_RUNNERS__PYTORCH", "docker:img")
    uc = load_user_config()
    assert uc.measurement.datacenter_pue == 1.5 and uc.output.results_dir == "out"
    assert uc.measurement.energy_backend == "zeus"
    assert uc.measurement.carbon_intensity_gco2_kwh == 50.0
    assert uc.execution.cycle_gap_seconds == 5.0 and uc.runners == {"pytorch": "docker:img"}
    assert uc.provenance["measurement.datacenter_pue"] == "env"
    assert uc.provenance["execution.cycle_gap_seconds"] == "env"


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_PUE", "0.5")
    with pytest.raises(ConfigValidationError) as info:
        load_user_config()
    (issue,) = info.value.issues
    assert issue.path == "measurement.datacenter_pue"
    assert issue.file == "environment variable LLEM_PUE" and ">= 1" in issue.message


def test_unknown_generic_env_variable_suggests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_MEASUREMENT__DATACENTER_PEU", "1.2")
    with pytest.raises(ConfigValidationError) as info:
        load_user_config()
    assert "LLEM_MEASUREMENT__DATACENTER_PUE" in (info.value.issues[0].fix or "")


def test_bad_file_reports_file_and_line() -> None:
    path = write_user_config("output:\n  results_dir: r\nmeasurement:\n  carbon_intensity: 300\n")
    with pytest.raises(ConfigValidationError) as info:
        load_user_config()
    (issue,) = info.value.issues
    assert (issue.file, issue.line) == (str(path), 4)
    assert issue.path == "measurement.carbon_intensity"
    assert "carbon_intensity_gco2_kwh" in (issue.fix or "")


def test_bad_runner() -> None:
    write_user_config("runners:\n  vllm: podman\n")
    with pytest.raises(ConfigValidationError, match=r"docker:<image>"):
        load_user_config()


def test_secrets_are_refused() -> None:
    path = write_user_config("runners:\n  pytorch: local\nhf_token: abc\n")
    with pytest.raises(ConfigValidationError) as info:
        load_user_config()
    (issue,) = info.value.issues
    assert (issue.path, issue.line, issue.file) == ("hf_token", 3, str(path))
    assert "secrets" in issue.message and "env-file" in (issue.fix or "")


def test_explicit_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigValidationError, match="file not found"):
        load_user_config(tmp_path / "none.yaml")
