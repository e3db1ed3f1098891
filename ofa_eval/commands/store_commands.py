"""Commands that fill or query the store: `import` and `sql`."""

from __future__ import annotations

import click


@click.group("import")
def import_group():
    """Import results produced elsewhere into the store."""


@import_group.command("ofa-xlt")
@click.argument("directory", type=click.Path(file_okay=False))
@click.pass_context
def import_ofa_xlt(ctx, directory):
    """Import the paper's released results: the six *_zs / *_ra tables in DIRECTORY.

    DIRECTORY is a clone of the authors' repository (fdschmidt93/ofa-xlt; its
    analysis/pickles/*.pkl), that pickles folder itself, or a folder of Parquet copies of the
    same tables. The pickles are read without pandas and without running anything in them: a
    pickle that names anything but the pandas, numpy and builtin pieces of a DataFrame is
    refused. Every run, averaged model and recorded draw of every model in the release is
    stored, in percent. Importing the same files again changes nothing; a missing or malformed
    file leaves the store untouched.
    """
    from pathlib import Path

    from ofa_eval.artifacts.release import import_release
    from ofa_eval.store.database import connected

    with connected(ctx.obj["db_path"]) as con:
        summaries = import_release(con, Path(directory))
    for summary in summaries:
        click.echo(f"{summary.task}: {summary.runs_added} runs, {summary.averages_added} averaged models, "
                   f"{summary.draws_added} draws, {summary.scores_added} scores added")


@click.command("ingest")
@click.argument("runs", type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes that validate and score runs (default: the CPUs available).")
@click.pass_context
def ingest(ctx, runs, quiet, workers):
    """Load the complete run folders under RUNS (written by the producers) into the store.

    Predictions are scored with each task's metric and the LAST, SRC-DEV, CA and TRG-DEV
    variants are derived from the snapshot scores. Runs already in the store are skipped, so
    ingesting again changes nothing; incomplete runs are skipped and listed. A corrupt or
    truncated file stops the whole call with an error naming it, and the store stays as it was.
    Runs are scored while the store is closed (other commands can read it meanwhile), then
    inserted in one transaction; a store that another process holds is waited for up to
    `ofa-eval --lock-timeout` seconds.
    """
    from pathlib import Path

    from ofa_eval.artifacts.ingest import ingest_runs

    summary = ingest_runs(ctx.obj["db_path"], Path(runs), progress=not quiet, workers=workers)
    click.echo(f"{len(summary.ingested)} run(s) ingested, {len(summary.already)} already in the store, "
               f"{len(summary.incomplete)} incomplete")
    for name in summary.incomplete:
        click.echo(f"note: skipped incomplete run {name}", err=True)


@click.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_context
def sql(ctx, query, fmt):
    """Run a read-only SQL QUERY against the store and print the result.

    Public views: runs, snapshots, eval_sets, scores, selection_scores, averaged_models,
    draws, protocol_results, run_variants, average_scores (see docs/store.md). The store is
    opened read-only, and only statements that read run: SELECT (DESCRIBE, SHOW, SUMMARIZE,
    and read_csv / read_parquet of local files included), PIVOT and EXPLAIN. Anything else
    (INSERT, CREATE, ATTACH, SET, PRAGMA, COPY ... TO, ...) is refused before it runs: sql
    writes only to standard output; export with --format csv or json and a redirect.
    """
    from ofa_eval.api import sql_rows
    from ofa_eval.results.formatting import render_rows

    result = sql_rows(ctx.obj["db_path"], query)
    if result is not None:
        click.echo(render_rows(result[1], result[0], fmt))


COMMANDS = [import_group, ingest, sql]
