"""`ofa-eval quickstart`: the whole pipeline, offline, on a CPU, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import click

from ofa_eval.commands.results import draw_options, selection_options
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
    several target "languages"), a tokenizer trained on it, a tiny XLM-R-shaped model built from
    a config, and a reduced hyperparameter grid with real snapshots, predictions and safetensors
    weights. The runs land in DIRECTORY/runs/, the averaged models of accumulative CA averaging
    in DIRECTORY/averages/, and the store in DIRECTORY/ofa-eval.duckdb (default DIRECTORY:
    ./ofa-quickstart). Runs and averages already made there are reused.
    """
    from ofa_eval.formatting import render_protocol
    from ofa_eval.ingest import ingest
    from ofa_eval.protocol import DrawOptions, compute_protocol, pools_in_store, strategy_pairs
    from ofa_eval.store import connected, transaction
    from producers.quickstart import train_quickstart_grid

    root = Path(directory)
    runs = train_quickstart_grid(root, tasks=tuple(tasks) or ("nli", "qa", "ner"), progress=True)
    db = str(root / "ofa-eval.duckdb")
    with connected(db) as con:
        summary = ingest(con, runs, progress=True)
        click.echo(f"{len(summary.ingested)} run(s) ingested into {db}", err=True)
        max_runs = min(4, *(len(_configs(con, t, m)) for t, m in pools_in_store(con, (), ())))
    options = DrawOptions(n_draws=n_draws, seed=seed)
    pairs = strategy_pairs(("max-src-dev", "max-trg-dev"), (), soup_k=5)
    if not no_averaging:
        averaging = [("accumulative", "ca")]
        made = materialize_needed(db, (), (), averaging, options, max_runs, out=str(root / "averages"))
        click.echo(f"{made} averaged model(s) materialized", err=True)
        pairs += averaging
    with connected(db) as con, transaction(con):
        rows, _ = compute_protocol(con, pools_in_store(con, (), ()), pairs, options, max_runs, 5)
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
              help="local: one averaged model after another here; slurm: one job per model (a submitit "
                   "job array), awaited here before the results are ingested.")
@slurm_options
@click.pass_context
def materialize(ctx, tasks, models, strategies, variants, all_pairs, n_draws, seed, replay, exclude, max_runs,
                soup_k, out, launcher, **slurm):
    """Make the averaged models that `protocol` would need, and score them.

    Takes the same options as `protocol`. For each draw and r, the members of every averaging
    strategy (LAST, SRC-DEV or CA weights of the first r runs; the top-k snapshots for soups;
    the next candidates of greedy soups, round after round) are averaged, evaluated on every
    evaluation set with the task's own code, and ingested. Member sets already in the store
    are skipped: the key is the members' content hashes. A one-member average reuses its
    member's predictions. Interrupted? Run it again: finished folders are reused.
    """
    from ofa_eval.commands.results import _options, _pairs

    pairs = _pairs(strategies, variants, all_pairs, soup_k)
    maker = None
    if launcher == "slurm":
        maker = _executor_maker(averages_root(ctx.obj["db_path"], out), "slurm", slurm)
    made = materialize_needed(ctx.obj["db_path"], tasks, models, pairs, _options(replay, exclude, n_draws, seed),
                              max_runs, out, maker)
    click.echo(f"{made} averaged model(s) materialized")


def _executor_maker(root, cluster, slurm: dict):
    """make_averages through a submitit executor whose logs go to ROOT/_slurm."""
    from ofa_eval.materialize import make_averages_with
    from producers.launch import make_executor

    options = dict(slurm)
    executor = make_executor(Path(root) / "_slurm", cluster, options.pop("slurm_partition", None), **options)
    return lambda plans, out_root: make_averages_with(executor, plans, out_root)


def averages_root(db_path, out) -> Path:
    """Where averaged-model folders go: --out, else averages/ beside the store."""
    return Path(out) if out else Path(db_path).resolve().parent / "averages"


def materialize_needed(db_path, tasks, models, pairs, options, max_runs, out, maker=None) -> int:
    """Plan with the store open, make the averages with it closed, then ingest; repeat until
    nothing is missing (greedy soups learn their next candidates from the last round's scores).

    `maker(plans, root)` makes the averaged-model folders (default: here, one after another).
    """
    from ofa_eval.errors import OfaError
    from ofa_eval.materialize import ingest_averages, make_averages_here, plan
    from ofa_eval.protocol import DEFAULT_MAX_RUNS, pools_in_store
    from ofa_eval.store import connected

    root = averages_root(db_path, out)
    maker = maker or make_averages_here
    made, seen = 0, set()
    for _ in range(max_runs or DEFAULT_MAX_RUNS):  # a greedy path takes at most R - 1 rounds
        with connected(db_path, must_exist=True) as con:
            plans = plan(con, pools_in_store(con, tasks, models), pairs, options, max_runs)
        if not plans:
            break
        keys = {(p.task, p.model, p.recipe, p.key) for p in plans}
        if keys & seen:
            raise OfaError(f"{root}: averaged models were made but the store still lacks them")
        seen |= keys
        folders = maker(plans, root)
        with connected(db_path) as con:
            made += ingest_averages(con, folders)
    return made


COMMANDS = [quickstart, materialize]
