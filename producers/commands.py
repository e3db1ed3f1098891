"""The `train` command: train a grid file's runs into a runs folder, here or on SLURM.

Registered in the `ofa-eval` CLI by `ofa_eval.cli`; torch and transformers are imported only
when the command runs.
"""

from __future__ import annotations

import click


def slurm_options(function):
    """The SLURM job options shared by `train` and `materialize` (used with --launcher slurm)."""
    options = [
        click.option("--slurm-partition", help="SLURM partition."),
        click.option("--slurm-timeout", "timeout_min", type=int, default=24 * 60, show_default=True,
                     help="Time limit of each job, in minutes."),
        click.option("--slurm-gpus", "gpus_per_node", type=int, default=1, show_default=True, help="GPUs per job."),
        click.option("--slurm-cpus", "cpus_per_task", type=int, default=8, show_default=True, help="CPUs per job."),
        click.option("--slurm-mem-gb", "mem_gb", type=int, default=64, show_default=True,
                     help="Memory per job (GB)."),
        click.option("--slurm-parallel", "array_parallelism", type=int, default=64, show_default=True,
                     help="How many jobs of the array may run at once."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command("train")
@click.argument("grid_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs folder: one subfolder per run, aligned heads under _heads/.")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="local: one run after another in this process; slurm: one job per run via submitit.")
@click.option("--task", "tasks", multiple=True, type=click.Choice(["nli", "qa", "ner"]),
              help="Train only these tasks of the grid (default: every task table).")
@slurm_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def train(grid_file, out, launcher, tasks, slurm_partition, timeout_min, gpus_per_node, cpus_per_task, mem_gb,
          array_parallelism, quiet):
    """Train every run of GRID_FILE (a TOML grid, see docs/producers.md) into --out.

    Each run writes only its own folder (docs/artifacts.md); finished runs are skipped and
    interrupted runs resume from their last snapshot, so running the command again completes a
    grid. Then load the runs with `ofa-eval ingest OUT`.

    \b
      ofa-eval train producers/grids/paper.toml --out runs/ --task nli
      ofa-eval train grid.toml --out runs/ --launcher slurm --slurm-partition gpu
    """
    from pathlib import Path

    from producers.grid import load_grid
    from producers.launch import make_executor, submit, train_local

    experiments = load_grid(grid_file, tasks=tuple(tasks) or None)
    runs = Path(out)
    if launcher == "local":
        folders = train_local(experiments, runs, progress=not quiet)
        click.echo(f"{len(folders)} run(s) complete in {runs}")
        return
    executor = make_executor(runs / "_slurm", "slurm", slurm_partition, timeout_min, gpus_per_node, cpus_per_task,
                             mem_gb, array_parallelism)
    jobs = submit(experiments, runs, executor)
    click.echo(f"submitted {len(jobs)} job(s): {' '.join(str(job.job_id) for job in jobs)}")
    click.echo(f"logs: {runs / '_slurm'}; when they are done: ofa-eval ingest {runs}")


COMMANDS = [train]
