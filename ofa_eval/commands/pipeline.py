"""`ofa-eval quickstart`: the whole pipeline, offline, on a CPU, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import click

from ofa_eval.commands.options import draw_options, draws_from, pairs_from, param_names, selection_options
from ofa_eval.averages.defaults import AVERAGES_PER_JOB
from producers.commands import slurm_options


@click.command("quickstart")
@click.argument("directory", default="ofa-quickstart", type=click.Path(file_okay=False))
@click.option("--task", "tasks", multiple=True, type=click.Choice(["nli", "qa", "ner"]),
              help="Tasks to run (default: all three).")
@click.option("--draws", "n_draws", type=int, default=5, show_default=True, help="Random draws for the protocol.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--no-averaging", is_flag=True, help="Skip materializing the accumulative averages (faster).")
def quickstart(directory, tasks, n_draws, seed, no_averaging):
    """Generate data, train a tiny grid, ingest it, average, and print the protocol table.

    Everything happens offline: a small synthetic multilingual corpus per task (English source,
    several target "languages"), a tokenizer and a tiny XLM-R-shaped model pretrained by masked
    language modelling on unlabeled text of every language (as `ofa-eval build-model` makes
    one, in DIRECTORY/model/), and a reduced hyperparameter grid fine-tuned from that model, with
    real snapshots, predictions and safetensors weights. The runs land in DIRECTORY/runs/, the
    averaged models of accumulative CA averaging in DIRECTORY/averages/, and the store in
    DIRECTORY/ofa-eval.duckdb (default DIRECTORY: ./ofa-quickstart). The model, runs and
    averages already made there are reused.
    """
    from ofa_eval.results.formatting import render_protocol
    from ofa_eval.artifacts.ingest import ingest_runs
    from ofa_eval.evaluation import DrawOptions, compute_protocol, pools_in_store, strategy_pairs
    from ofa_eval.store.database import connected, transaction
    from producers.quickstart import train_quickstart_grid

    root = Path(directory)
    runs = train_quickstart_grid(root, tasks=tuple(tasks) or ("nli", "qa", "ner"), progress=True)
    db = str(root / "ofa-eval.duckdb")
    summary = ingest_runs(db, runs, progress=True)
    click.echo(f"{len(summary.ingested)} run(s) ingested into {db}", err=True)
    with connected(db) as con:
        max_runs = min(4, *(len(_configs(con, t, m)) for t, m in pools_in_store(con, (), ())))
    options = DrawOptions(n_draws=n_draws, seed=seed)
    pairs = strategy_pairs(("max-src-dev", "max-trg-dev"), (), soup_k=5)
    if not no_averaging:
        averaging = [("accumulative", "ca")]
        made = materialize_here(db, (), (), averaging, options, max_runs, out=root / "averages")
        click.echo(f"{made} averaged model(s) materialized", err=True)
        pairs += averaging
    with connected(db) as con, transaction(con):
        rows, notes = compute_protocol(con, pools_in_store(con, (), ()), pairs, options, max_runs, 5)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(render_protocol(rows, "table"))
    click.echo(f"\nstore: {db}  runs: {runs}\n"
               f"next: ofa-eval --db {db} report {root / 'report'}")


def _configs(con, task, model):
    return con.execute("SELECT DISTINCT learning_rate, batch_size FROM runs WHERE task=? AND model=?",
                       [task, model]).fetchall()


@click.command("materialize")
@selection_options
@draw_options
@click.option("--out", type=click.Path(file_okay=False),
              help="Where averaged-model folders go (default: averages/ beside the store).")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="local: one averaged model after another here; slurm: one submitit job array whose "
                   "tasks each make up to --averages-per-job models of one pool, awaited here before the "
                   "results are ingested (or, with --no-wait, collected and ingested by a later call).")
@slurm_options
@click.option("--averages-per-job", "per_job", type=click.IntRange(min=1), default=AVERAGES_PER_JOB,
              show_default=True,
              help="With --launcher slurm: averaged models per array task (each task builds the model and "
                   "tokenizes the evaluation sets once for all of them).")
@click.pass_context
def materialize(ctx, out, launcher, per_job, **params):
    """Make the averaged models that `protocol` would need, and score them.

    Takes the same options as `protocol`. For each draw and r, the members of every averaging
    strategy (LAST, SRC-DEV or CA weights of the first r runs; the top-k snapshots for soups;
    the next candidates of greedy soups, round after round) are averaged, evaluated on every
    evaluation set with the task's own code, and ingested. Member sets already in the store
    are skipped: the key is the members' content hashes. A one-member average reuses its
    member's predictions. Interrupted? Run it again: finished folders are reused.
    """
    slurm = {key: params.pop(key) for key in list(params) if key in param_names(slurm_options)}
    db_path = ctx.obj["db_path"]
    maker = None
    if launcher == "slurm":
        from ofa_eval.averages.materialize import averages_root

        maker = executor_maker(averages_root(db_path, out), "slurm", slurm, per_job)
    made = materialize_here(db_path, params["tasks"], params["models"], pairs_from(params), draws_from(params),
                            params["max_runs"], out, maker)
    click.echo(f"{made} averaged model(s) materialized")


def executor_maker(root, cluster, slurm: dict, per_job: int = AVERAGES_PER_JOB):
    """make_averages_with through a submitit executor whose logs go to ROOT/_slurm."""
    from ofa_eval.averages.materialize import make_averages_with
    from producers.launch import make_executor
    from producers.predict import predict_with_weights

    options = dict(slurm)
    wait, timeout_min = options.pop("wait", None) is not False, options.pop("wait_timeout", None)
    executor = make_executor(Path(root) / "_slurm", cluster, options.pop("slurm_partition", None), **options)
    return lambda plans, out_root: make_averages_with(executor, plans, out_root, predict_with_weights,
                                                      wait=wait, timeout_min=timeout_min, per_job=per_job)


def materialize_here(db_path, tasks, models, pairs, options, max_runs, out=None, maker=None) -> int:
    """`ofa_eval.averages.materialize.materialize_missing` with the producers' predictor; by default the
    averages are made in this process, one after another."""
    from ofa_eval.averages.materialize import averages_root, make_averages, materialize_missing
    from producers.predict import predict_with_weights

    maker = maker or (lambda plans, root: make_averages(plans, root, predict_with_weights, progress=True))
    return materialize_missing(db_path, tasks, models, pairs, options, max_runs, averages_root(db_path, out), maker)


COMMANDS = [quickstart, materialize]
