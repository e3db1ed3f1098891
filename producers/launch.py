"""Launching a grid: one run after another in this process, or one SLURM job per run (submitit).

Each run writes only its own folder `<runs>/<run-name>/`; the aligned task head of each
(task, model) is made once, before the runs, under `<runs>/_heads/`. Complete runs are skipped
and interrupted ones resume, so launching the same grid again finishes what is missing.

On SLURM the head is one job and the runs are one job array (`executor.batch()`) that starts
only after the head job succeeded (`--dependency=afterok`). Other submitit executors (the local
one, used in tests) have no dependencies: there the head job is awaited before the array is
submitted.
"""

from __future__ import annotations

from pathlib import Path

from producers.artifacts import read_manifest_if_any
from producers.heads import head_folder, prepare_head, read_head


def pending(experiment, runs_dir) -> list:
    """The experiment's runs that are not complete yet."""
    return [c for c in experiment.runs()
            if (read_manifest_if_any(Path(runs_dir) / c.name) or {}).get("state") != "complete"]


def train_local(experiments, runs_dir, progress: bool = True) -> list[Path]:
    """Train every run of every experiment here, one after another."""
    from producers.train import train_run

    runs_dir, folders = Path(runs_dir), []
    for experiment in experiments:
        todo = pending(experiment, runs_dir)
        if not todo:
            folders += [runs_dir / c.name for c in experiment.runs()]
            continue
        data = experiment.load_data()
        head = make_head(experiment, runs_dir, data, progress)
        for config in experiment.runs():
            folders.append(train_run(config, data, runs_dir / config.name, head, progress=progress))
    return folders


def make_head(experiment, runs_dir, data=None, progress: bool = False):
    """The experiment's aligned head (made by its initial fine-tune when missing)."""
    config = experiment.head_config()
    data = data if data is not None else experiment.load_data()
    return prepare_head(experiment.head_mode, config, data, head_folder(runs_dir, config), progress)


def run_job(experiment, config, runs_dir) -> str:
    """One grid run as a batch job: load the data, read the aligned head, train."""
    from producers.train import train_run

    folder = head_folder(runs_dir, experiment.head_config())
    head = read_head(folder) if experiment.head_mode != "none" else None
    if experiment.head_mode != "none" and head is None:
        raise RuntimeError(f"{folder}: the aligned head is missing (did the head job fail?)")
    return str(train_run(config, experiment.load_data(), Path(runs_dir) / config.name, head, progress=False))


def head_job(experiment, runs_dir) -> str:
    make_head(experiment, runs_dir)
    return str(head_folder(runs_dir, experiment.head_config()))


def make_executor(folder, cluster: str | None = None, partition: str | None = None, timeout_min: int = 24 * 60,
                  gpus_per_node: int = 1, cpus_per_task: int = 8, mem_gb: int = 64, array_parallelism: int = 64,
                  **slurm):
    """A submitit executor; `cluster=None` picks SLURM where `sbatch` exists."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    parameters = {"timeout_min": timeout_min, "slurm_array_parallelism": array_parallelism}
    if executor.cluster == "slurm":
        parameters.update(gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, mem_gb=mem_gb,
                          **({"slurm_partition": partition} if partition else {}),
                          **{f"slurm_{k}": v for k, v in slurm.items()})
    executor.update_parameters(**parameters)
    return executor


def submit(experiments, runs_dir, executor) -> list:
    """Submit the grid: a head job per experiment, then an array of its pending runs."""
    jobs = []
    for experiment in experiments:
        todo = pending(experiment, runs_dir)
        if not todo:
            continue
        after = None
        if experiment.head_mode != "none" and read_head(head_folder(runs_dir, experiment.head_config())) is None:
            executor.update_parameters(name=f"{experiment.task}-head")
            after = executor.submit(head_job, experiment, str(runs_dir))
            jobs.append(after)
        _wait_for(executor, after)
        executor.update_parameters(name=f"{experiment.task}-grid")
        with executor.batch():
            array = [executor.submit(run_job, experiment, config, str(runs_dir)) for config in todo]
        _wait_for(executor, None)
        jobs += array
    return jobs


def _wait_for(executor, job) -> None:
    """Make the next submissions start after `job`: a SLURM dependency, or waiting here."""
    if getattr(executor, "cluster", None) != "slurm":
        if job is not None:
            job.result()
        return
    extra = {"dependency": f"afterok:{job.job_id}"} if job is not None else {}
    executor.update_parameters(slurm_additional_parameters=extra)
