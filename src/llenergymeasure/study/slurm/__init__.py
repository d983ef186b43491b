"""The Slurm executor: each experiment of a study is one Slurm job, submitted through submitit.

Modules (submitit, an optional extra, is imported only inside functions of `submit`):

* `settings`  -- the sbatch settings of each job (also what ``llem run --dry-run`` prints)
* `sacct`     -- one ``sacct`` call for many jobs, parsed
* `states`    -- a finished job (sacct state, exit code, result pickle) -> manifest outcome
* `job`       -- the function that runs one experiment inside its Slurm job
* `submit`    -- submitit: the lazy import, submitting, re-attaching, reading result pickles
* `executor`  -- the study side: submit in run order, at most ``max_parallel`` at once,
  wait without spinning, collect, re-attach on resume
"""
