"""Commands that compute results from the store: `protocol`, `check` and `grid`."""

from __future__ import annotations

import click

from ofa_eval.commands.options import (FORMATS, draw_options, draws_from, format_option, pairs_from, pairs_named,
                                       resampling_options, selection_options)


@click.command("protocol")
@selection_options
@draw_options
@click.option("--materialize", is_flag=True,
              help="First make and score the averaged models the draws need (see `ofa-eval materialize`).")
@click.option("--exact", is_flag=True,
              help="Selection strategies in closed form over every possible draw instead of sampled draws.")
@resampling_options(10_000, "--ci", resample=True, ci=None,
                    ci_help="Add a bootstrap confidence interval (over draws) of the mean at this level, e.g. 95: "
                            "columns ci_low, ci_high.")
@click.option("--ci-method", type=click.Choice(["percentile", "bca"]), default="percentile", show_default=True)
@format_option()
@click.pass_context
def protocol(ctx, materialize, exact, ci_method, fmt, **params):
    """Run the resampling protocol and print mean and std over draws for r = 1..R.

    \b
    Strategies and variants:
      max-src-dev   last | src-dev | ca   pick the run with the best source-language validation score
      max-trg-dev   trg-dev               pick the run with the best target validation (oracle)
      accumulative  last | src-dev | ca   average the weights of the first r runs
      soup          (top-k)               average the k best snapshots of the first r runs
      greedy-soup   last | src-dev | ca   Wortsman et al.'s greedy soup of the first r runs,
                                          ranked and grown on source-language validation

    Draws: --draws N --seed S samples N fresh draws (R distinct learning-rate/batch-size
    configurations in random order, one seed each); --replay uses the draws recorded in the
    store; --exact gives the selection strategies' expectation and std over every possible
    draw in closed form. With none of these, a pool whose runs' weights the store lacks
    (released results) replays its recorded draws and any other gets 10 fresh draws; with
    the default strategies, a pair whose averaged models are missing is skipped with a note.
    Results are written to the store's protocol_results view.

    Intervals: --ci 95 adds a bootstrap interval of each mean. By default it resamples the
    draws (run-to-run variation only); --resample draws+examples also resamples the target
    test examples, stratified by language and shared by every run, average and strategy, so
    the interval covers test-set sampling too.
    """
    from ofa_eval.commands.options import resampling_from
    from ofa_eval.common.errors import OfaError
    from ofa_eval.results.formatting import render_protocol
    from ofa_eval.protocol import compute_protocol, pools_in_store
    from ofa_eval.store.database import connected, transaction

    interval = None
    if params["ci_percent"] is not None:
        interval = resampling_from(params, method=ci_method)
    elif params["resample"] != "draws":
        raise OfaError("--resample applies to a confidence interval: add --ci 95")
    pairs, options, db_path = pairs_from(params), draws_from(params), ctx.obj["db_path"]
    tasks, models, max_runs = params["tasks"], params["models"], params["max_runs"]
    if exact:
        return click.echo(render_protocol(_exact_rows(db_path, tasks, models, pairs, max_runs), fmt))
    if materialize:
        from ofa_eval.commands.pipeline import materialize_here

        materialize_here(db_path, tasks, models, pairs, options, max_runs)
    with connected(db_path, must_exist=True) as con, transaction(con):
        rows, notes = compute_protocol(con, pools_in_store(con, tasks, models), pairs, options, max_runs,
                                       params["soup_k"], skip_incomplete=not (tasks and models), interval=interval,
                                       skip_missing_pairs=not pairs_named(params))
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(render_protocol(rows, fmt))


def _exact_rows(db_path, tasks, models, pairs, max_runs) -> list[dict]:
    from ofa_eval.protocol import exact_rows, load_pool, pools_in_store, record_results
    from ofa_eval.store.database import connected, transaction

    rows = []
    with connected(db_path, must_exist=True) as con, transaction(con):
        for task, model in pools_in_store(con, tasks, models):
            pool_rows = exact_rows(load_pool(con, task, model), pairs, max_runs)
            record_results(con, pool_rows, {"draws": "exact", "max_runs": max(r["runs"] for r in pool_rows)})
            rows += pool_rows
    return rows


@click.command("check")
@click.argument("tables", nargs=-1, required=True, type=click.Path(dir_okay=False))
@draw_options
@click.pass_context
def check(ctx, tables, **params):
    """Recompute every row of benchmark TABLES (protocol CSVs) and compare with the store.

    A table has the protocol CSV's columns (task,model,strategy,variant,runs,mean,std,draws)
    and an optional `tolerance` column (default 0.1, in points). An empty std or draws cell
    is not checked. Exits 1 listing every cell outside tolerance, 0 when all agree.
    """
    from ofa_eval.results.checking import check_tables

    failures, checked = check_tables(ctx.obj["db_path"], tables, draws_from(params), params["soup_k"])
    for line in failures:
        click.echo(line)
    click.echo(f"{checked} cells checked, {len(failures)} outside tolerance")
    if failures:
        ctx.exit(1)


@click.command("grid")
@click.option("--task", required=True, help="Task, e.g. nli, tydiqa, ner.")
@click.option("--model", required=True, help="Model, e.g. xlm-roberta-large.")
@format_option(FORMATS)
@click.pass_context
def grid(ctx, task, model, fmt):
    """Per-hyperparameter table (the paper's Table 3): mean and std over seeds.

    For each (learning rate, batch size): the source validation score and the mean target
    test score of every variant (LAST, SRC-DEV, CA, TRG-DEV), mean and std over seeds.
    """
    from ofa_eval.results.formatting import render_rows
    from ofa_eval.results.hyperparameters import grid_rows
    from ofa_eval.store.database import connected

    with connected(ctx.obj["db_path"], read_only=True) as con:
        rows, columns = grid_rows(con, task, model)
    click.echo(render_rows(rows, columns, fmt, digits=2))


COMMANDS = [protocol, check, grid]
