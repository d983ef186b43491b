"""The sbatch settings of each experiment's job, from the study's ``slurm:`` section.

`executor_parameters` gives the keyword arguments of ``submitit.SlurmExecutor
.update_parameters`` (Slurm's own option names, unprefixed); `sbatch_lines` renders them the
way submitit writes its sbatch script (sorted ``#SBATCH --key=value`` lines, plus the
options submitit always adds: ``--output``/``--error`` in the job folder, ``--open-mode=append``
so a requeued job keeps its first run's log, and ``--signal=USR2@<signal_delay_s>``), for
``llem run --dry-run``. Nothing here imports submitit.

One experiment = one job: one node, one task, ``gpus_per_job`` GPUs (``--gpus-per-node``),
``cpus_per_job`` CPUs, ``mem_gb`` memory. The time limit is ``time_limit_min`` or, when not
given, the study's ``experiment_timeout_seconds`` plus ``signal_delay_s``, rounded up to
minutes: submitit stops the job (USR2) ``signal_delay_s`` before the limit.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llenergymeasure.config.models import SlurmConfig, StudyConfig
    from llenergymeasure.study.grid import StudyPlan

#: Where a study keeps its jobs' submitit files (pickles, sbatch scripts, logs).
JOB_FOLDER = "slurm"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
USR2_WARN_MIN = 3  # a limit this short gets submitit's USR2 almost at once


def job_name(study_name: str, position: int, cycle: int) -> str:
    """``llem-<study>-p<position>-c<cycle>`` (what squeue and sacct show)."""
    return _UNSAFE.sub("_", f"llem-{study_name}-p{position}-c{cycle}")[:120]


def job_folder(study_dir: Path) -> Path:
    """submitit's folder for a study's jobs: ``<study_dir>/slurm/<job id>/``."""
    return Path(study_dir) / JOB_FOLDER / "%j"


def time_limit_min(study: StudyConfig) -> int:
    """The ``--time`` of each job of ``study``."""
    return study.slurm.effective_time_limit_min(study.execution.experiment_timeout_seconds)


def executor_parameters(
    slurm: SlurmConfig, *, time_min: int, name: str, comment: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``submitit.SlurmExecutor.update_parameters``."""
    params: dict[str, Any] = {
        "job_name": name,
        "time": time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": slurm.cpus_per_job,
        "signal_delay_s": slurm.signal_delay_s,
    }
    if slurm.gpus_per_job:
        params["gpus_per_node"] = slurm.gpus_per_job
    if slurm.mem_gb is not None:
        params["mem"] = mem_text(slurm.mem_gb)
    for key in ("partition", "account", "qos"):
        value = getattr(slurm, key)
        if value:
            params[key] = value
    if comment:
        params["comment"] = comment
    if slurm.setup:
        params["setup"] = list(slurm.setup)
    if slurm.extra_sbatch:
        params["additional_parameters"] = dict(slurm.extra_sbatch)
    return params


def mem_text(mem_gb: float) -> str:
    """``--mem``: whole GB as ``16GB``, else MB (``0.25`` -> ``256MB``)."""
    if float(mem_gb).is_integer():
        return f"{int(mem_gb)}GB"
    return f"{round(mem_gb * 1024)}MB"


def sbatch_lines(params: dict[str, Any], folder: Path | str) -> list[str]:
    """The ``#SBATCH`` lines submitit writes for ``params`` (see the module docstring)."""
    options: dict[str, Any] = {
        k: v
        for k, v in params.items()
        if k not in ("setup", "additional_parameters", "signal_delay_s")
    }
    options["signal"] = f"USR2@{params.get('signal_delay_s', 90)}"
    options["output"] = f"{folder}/%j_0_log.out"
    options["error"] = f"{folder}/%j_0_log.err"
    options["open_mode"] = "append"
    options["wckey"] = "submitit"
    options.update(params.get("additional_parameters") or {})
    lines = []
    for key in sorted(options, key=lambda k: k.replace("_", "-")):
        flag = key.replace("_", "-")
        value = options[key]
        lines.append(f"#SBATCH --{flag}" if value is True else f"#SBATCH --{flag}={_q(value)}")
    return lines


def _q(value: Any) -> str:
    """Shell-quoted like submitit does (``shlex.quote``)."""
    return shlex.quote(str(value))


def plan_problems(plan: StudyPlan, slurm: SlurmConfig) -> list[str]:
    """Why some experiments of ``plan`` cannot run as the ``slurm:`` section asks (empty:
    they can). An experiment asking for GPU indices beyond ``gpus_per_job`` would see
    none: inside a job the GPUs are numbered from 0."""
    problems = []
    for u in plan.unique_configs:
        gpus = u.config.gpus
        if gpus and max(gpus) >= slurm.gpus_per_job:
            problems.append(
                f"{u.label or u.config.name}: gpus {gpus} but each job gets "
                f"slurm.gpus_per_job={slurm.gpus_per_job} GPU(s), numbered from 0 -> raise "
                "slurm.gpus_per_job or use gpus: null"
            )
    return problems


def notes(study: StudyConfig) -> list[str]:
    """Things worth saying about the settings before anything is submitted."""
    out = []
    limit = time_limit_min(study)
    if limit * 60 <= study.slurm.signal_delay_s + 60 or limit < USR2_WARN_MIN:
        out.append(
            f"slurm: --time={limit} min with signal_delay_s={study.slurm.signal_delay_s}: "
            "submitit stops each job (USR2) almost as soon as it starts -> a longer "
            "time_limit_min, or a smaller signal_delay_s"
        )
    return out
