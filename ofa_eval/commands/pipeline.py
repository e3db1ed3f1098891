"""`ofa-eval quickstart`: the whole pipeline, offline, on a CPU, in a few minutes."""

from __future__ import annotations

import click


@click.command("quickstart")
@click.argument("directory", default="ofa-quickstart", type=click.Path(file_okay=False))
@click.option("--task", "tasks", multiple=True, type=click.Choice(["nli", "qa", "ner"]),
              help="Tasks to run (default: all three).")
@click.option("--draws", "n_draws", type=int, default=10, show_default=True, help="Random draws for the protocol.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
def quickstart(directory, tasks, n_draws, seed):
    """Generate data, train a tiny grid, ingest it and print the protocol table.

    Everything happens offline: a small synthetic multilingual corpus per task (English source,
    several target "languages"), a tokenizer trained on it, a tiny XLM-R-shaped model built from
    a config, and a reduced hyperparameter grid with real snapshots, predictions and safetensors
    weights. The runs land in DIRECTORY/runs/ and the store in DIRECTORY/ofa-eval.duckdb
    (default DIRECTORY: ./ofa-quickstart). Runs already trained there are reused.
    """
    from pathlib import Path

    from ofa_eval.formatting import render_protocol
    from ofa_eval.ingest import ingest
    from ofa_eval.protocol import DrawOptions, compute_protocol, pools_in_store, strategy_pairs
    from ofa_eval.store import connected, transaction
    from producers.quickstart import train_quickstart_grid

    root = Path(directory)
    runs = train_quickstart_grid(root, tasks=tuple(tasks) or ("nli", "qa", "ner"), progress=True)
    db = root / "ofa-eval.duckdb"
    with connected(str(db)) as con:
        summary = ingest(con, runs, progress=True)
        click.echo(f"{len(summary.ingested)} run(s) ingested into {db}", err=True)
        pairs = strategy_pairs(("max-src-dev", "max-trg-dev"), (), soup_k=5)
        with transaction(con):
            pools = pools_in_store(con, (), ())
            max_runs = min(4, *(len({c for c in _configs(con, t, m)}) for t, m in pools))
            rows, _ = compute_protocol(con, pools, pairs, DrawOptions(n_draws=n_draws, seed=seed), max_runs, 5)
    click.echo(render_protocol(rows, "table"))
    click.echo(f"\nstore: {db}  runs: {runs}\n"
               f"next: ofa-eval --db {db} sql \"SELECT * FROM run_variants LIMIT 5\"")


def _configs(con, task, model):
    return con.execute("SELECT DISTINCT learning_rate, batch_size FROM runs WHERE task=? AND model=?",
                       [task, model]).fetchall()


COMMANDS = [quickstart]
