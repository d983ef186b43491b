"""The Slurm executor's pure parts: config and provenance, sbatch settings, sacct parsing,
state mapping, placement, the per-node baseline key, --dry-run and --retry-failed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llenergymeasure.config.loader import load_config
from llenergymeasure.config.models import SlurmConfig
from llenergymeasure.config.user_config import load_user_config
from llenergymeasure.core.energy.baseline import baseline_key
from llenergymeasure.core.environment import collect_placement
from llenergymeasure.exceptions import ConfigValidationError
from llenergymeasure.study.slurm import settings
from llenergymeasure.study.slurm.sacct import normalise_state, parse_sacct
from llenergymeasure.study.slurm.states import JobEnd, classify, is_active

STUDY = {
    "study_name": "s",
    "base": {"model": "tiny-llama", "device": "cpu", "n": 2},
    "sweep": {"max_output_tokens": [3, 4]},
    "execution": {"executor": "slurm", "n_cycles": 2},
}


def write(tmp_path: Path, data: dict[str, object], name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- config -------------------------------------------------------------------------------
def test_slurm_section_from_user_config_then_study_with_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = write(
        tmp_path,
        {"slurm": {"partition": "gpu", "account": "proj", "qos": "low"}},
        "config.yaml",
    )
    monkeypatch.setenv("LLEM_SLURM__QOS", "high")
    uc = load_user_config(user)
    path = write(tmp_path, {**STUDY, "slurm": {"account": "other", "max_parallel": 2}})
    loaded = load_config(path, user_config=uc)
    slurm = loaded.study.slurm
    assert (slurm.partition, slurm.account, slurm.qos, slurm.max_parallel) == (
        "gpu",
        "other",
        "high",
        2,
    )
    p = loaded.provenance
    assert p["slurm.partition"] == "user_config"
    assert p["slurm.qos"] == "user_config"  # the user config's value, from its environment
    assert p["slurm.account"] == "file" and p["slurm.max_parallel"] == "file"
    assert p["slurm.gpus_per_job"] == "default"
    assert p["execution.executor"] == "file"
    assert uc.provenance["slurm.qos"] == "env"


def test_executor_default_comes_from_the_user_config(tmp_path: Path) -> None:
    uc = load_user_config(write(tmp_path, {"execution": {"executor": "slurm"}}, "c.yaml"))
    data = {k: v for k, v in STUDY.items() if k != "execution"}
    loaded = load_config(write(tmp_path, data), user_config=uc)
    assert loaded.study.execution.executor == "slurm"


@pytest.mark.parametrize(
    ("slurm", "words"),
    [
        ({"extra_sbatch": {"time": 5}}, "set slurm.time_limit_min instead"),
        ({"extra_sbatch": {"output": "x"}}, "llem sets it for every job"),
        ({"extra_sbatch": {"gpus-per-node": 2}}, "set slurm.gpus_per_job instead"),
        ({"extra_sbatch": {"exclusive": False}}, "leave it out"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"partiton": "gpu"}, "did you mean 'partition'"),
        ({"max_parallel": 2, "gpus_per_job": 0}, "keeps two experiments off one GPU"),
    ],
)
def test_bad_slurm_settings_are_refused_with_the_fix(
    tmp_path: Path, slurm: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigValidationError, match=words):
        load_config(write(tmp_path, {**STUDY, "slurm": slurm}))


def test_extra_sbatch_keys_are_normalised() -> None:
    cfg = SlurmConfig(extra_sbatch={"--mail_type": "END", "exclusive": True})
    assert cfg.extra_sbatch == {"mail-type": "END", "exclusive": True}


def test_time_limit_defaults_to_the_experiment_timeout_plus_the_usr2_margin() -> None:
    assert SlurmConfig().effective_time_limit_min(3600.0) == 62
    assert SlurmConfig(signal_delay_s=30).effective_time_limit_min(60.0) == 2
    assert SlurmConfig(time_limit_min=7).effective_time_limit_min(3600.0) == 7


# ---- sbatch settings ----------------------------------------------------------------------
def test_sbatch_lines_are_what_submitit_writes() -> None:
    cfg = SlurmConfig(
        partition="gpu",
        account="proj",
        gpus_per_job=2,
        cpus_per_job=8,
        mem_gb=0.5,
        extra_sbatch={"constraint": "h100", "exclusive": True},
    )
    params = settings.executor_parameters(cfg, time_min=30, name="llem-x-p0-c1", comment="x")
    assert params["gpus_per_node"] == 2 and params["mem"] == "512MB"
    lines = settings.sbatch_lines(params, "/r/x/slurm/%j")
    assert lines == sorted(lines)
    for expected in (
        "#SBATCH --account=proj",
        "#SBATCH --constraint=h100",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --error=/r/x/slurm/%j/%j_0_log.err",
        "#SBATCH --exclusive",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --job-name=llem-x-p0-c1",
        "#SBATCH --mem=512MB",
        "#SBATCH --open-mode=append",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --time=30",
    ):
        assert expected in lines


def test_sbatch_parameters_are_valid_submitit_parameters(tmp_path: Path) -> None:
    """Every name we pass exists in submitit's SlurmExecutor (a wrong one raises there)."""
    submitit = pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = SlurmConfig(partition="gpu", account="a", qos="q", mem_gb=4, setup=["module load x"])
    params = settings.executor_parameters(cfg, time_min=5, name="n", comment="c")
    script = _make_sbatch_string(command="true", folder=str(tmp_path / "%j"), **params)
    ours = settings.sbatch_lines(params, tmp_path / "%j")
    theirs = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert ours == theirs
    assert "module load x" in script
    assert submitit.__version__.startswith("1.5")


# ---- sacct and states ---------------------------------------------------------------------
def test_parse_sacct_reads_job_lines_only() -> None:
    text = (
        "3|CANCELLED by 0|0:0|None|vm|2026-01-01T00:00:00|2026-01-01T00:01:00|00:01:00\n"
        "3.batch|CANCELLED|0:15||vm|||\n"
        "5|TIMEOUT|0:0|TimeLimit|vm|||00:01:27\n"
        "7|RUNNING|0:0|None|vm\n"
    )
    records = parse_sacct(text)
    assert sorted(records) == ["3", "5", "7"]
    assert records["3"].base_state == "CANCELLED" and records["3"].state == "CANCELLED by 0"
    assert records["5"].reason == "TimeLimit" and records["7"].node_list == "vm"
    assert normalise_state("CANCELLED+") == "CANCELLED" and normalise_state("") == "UNKNOWN"


def test_active_states() -> None:
    assert is_active(None) and is_active("PENDING") and is_active("REQUEUED")
    assert not is_active("COMPLETED") and not is_active("TIMEOUT")


TRACE = (
    "Job (task=0) failed during processing with trace:\n----------------------\n"
    'Traceback (most recent call last):\n  File "x.py", line 1\n'
    "llenergymeasure.exceptions.ExperimentError: experiment 'a' failed: CUDA error\n"
    "----------------------\nYou can check full logs with 'job.stderr(0)'"
)


@pytest.mark.parametrize(
    ("end", "state", "words"),
    [
        (JobEnd("1", "RUNNING", returned=True), "COMPLETED", None),
        (JobEnd("1", "FAILED", "1:0", "vm", error_trace=TRACE), "FAILED", "ExperimentError"),
        (
            JobEnd("1", "FAILED", "1:0", error_trace="... timed-out and not checkpointable."),
            "TIMEOUT",
            "USR2",
        ),
        (JobEnd("1", "TIMEOUT", "0:0"), "TIMEOUT", "past its time limit"),
        (JobEnd("1", "CANCELLED", "0:0", "vm"), "CANCELLED", "(exit code 0:0, node vm)"),
        (JobEnd("1", "OUT_OF_MEMORY", "0:125"), "OUT_OF_MEMORY", "out of memory"),
        (
            JobEnd("1", "FAILED", "9:0", stderr_tail="StepId=24.0 exceeded memory limit"),
            "OUT_OF_MEMORY",
            "sacct: FAILED",
        ),
        (JobEnd("1", "NODE_FAIL", "0:0"), "NODE_FAIL", "node failed"),
        (JobEnd("1", "PREEMPTED", "0:0"), "PREEMPTED", "not requeued"),
        (JobEnd("1", "COMPLETED", "0:0"), "FAILED", "no result"),
    ],
)
def test_classify(end: JobEnd, state: str, words: str | None) -> None:
    verdict = classify(end)
    assert verdict.state == state
    assert verdict.ok is (state == "COMPLETED")
    if words:
        assert verdict.reason is not None and words in verdict.reason, verdict.reason
        assert verdict.reason.startswith(f"Slurm job 1 {state}")


# ---- placement and baseline ---------------------------------------------------------------
def test_placement_records_the_node_and_slurms_gpus() -> None:
    env = {
        "CUDA_VISIBLE_DEVICES": "0",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_GPUS": "3",
        "SLURM_RESTART_COUNT": "1",
    }
    p = collect_placement(env)
    assert (p.cuda_visible_devices, p.scheduler, p.job_id, p.job_gpus, p.restart_count) == (
        "0",
        "slurm",
        "42",
        "3",
        1,
    )
    assert p.host
    local = collect_placement({})
    assert local.scheduler is None and local.job_id is None


def test_baseline_key_is_per_node() -> None:
    a = baseline_key(["GPU-a"], True, "node1")
    b = baseline_key(["GPU-a"], True, "node2")
    assert a != b and a == "node1/GPU-a|context"


def test_baseline_cache_put_is_atomic_and_keeps_other_entries(tmp_path: Path) -> None:
    from llenergymeasure.core.energy.baseline import BaselineCache
    from llenergymeasure.domain.energy import IdleBaseline

    cache = BaselineCache(tmp_path / "b.json")
    for key in ("n1/GPU-a|context", "n2/GPU-a|context"):
        cache.put(
            IdleBaseline(
                key=key,
                idle_power_w=70.0,
                idle_power_w_by_device={"gpu:0": 70.0},
                duration_s=5.0,
                method="counter",
                measured_at_unix_s=1e12,
            )
        )
    assert cache.get("n1/GPU-a|context", now_unix_s=1e12) is not None
    assert cache.get("n2/GPU-a|context", now_unix_s=1e12) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.json.lock"]


# ---- CLI ----------------------------------------------------------------------------------
def test_dry_run_prints_the_sbatch_settings_of_each_job(tmp_path: Path) -> None:
    from llenergymeasure.cli.app import app

    data = {**STUDY, "slurm": {"partition": "debug", "time_limit_min": 1, "cpus_per_job": 1}}
    out = CliRunner().invoke(app, ["run", str(write(tmp_path, data)), "--dry-run"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "Slurm: 4 jobs, one per experiment, one at a time" in text
    for line in ("#SBATCH --partition=debug", "#SBATCH --time=1", "#SBATCH --gpus-per-node=1"):
        assert line in text
    assert text.count("llem-s_TIMESTAMP-p") >= 4
    assert "USR2" in text  # a 1-minute limit is stopped almost at once: said


def test_dry_run_of_a_local_study_has_no_slurm_part(tmp_path: Path) -> None:
    from llenergymeasure.cli.app import app

    data = {**STUDY, "execution": {"n_cycles": 1}}
    out = CliRunner().invoke(app, ["run", str(write(tmp_path, data)), "--dry-run"])
    assert out.exit_code == 0 and "#SBATCH" not in out.output


def test_retry_failed_needs_a_study() -> None:
    from llenergymeasure.cli.app import app

    out = CliRunner().invoke(app, ["run", "--model", "tiny-llama", "--retry-failed"])
    assert out.exit_code == 2 and "--retry-failed applies to studies only" in out.output
