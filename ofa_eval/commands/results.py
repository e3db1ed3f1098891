"""Commands that compute results from the store: `protocol`, `check` and `grid`."""

from __future__ import annotations

import click

from ofa_eval.commands.options import (FORMATS, draw_keywords, draw_options, draws_from, format_option, pairs_from,
                                       resampling_keywords, resampling_options, selection_keywords, selection_options)


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
    from ofa_eval.api import protocol_tables
    from ofa_eval.results.formatting import render_protocol

    db_path = ctx.obj["db_path"]
    if materialize and not exact:
        from ofa_eval.commands.pipeline import materialize_here

        materialize_here(db_path, params["tasks"], params["models"], pairs_from(params), draws_from(params),
                         params["max_runs"])
    result = protocol_tables(db_path, **selection_keywords(params), **draw_keywords(params),
                             **resampling_keywords(params), exact=exact, ci_method=ci_method)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(render_protocol(result.tables["protocol"], fmt))


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
    from ofa_eval.api import grid_rows
    from ofa_eval.results.formatting import render_rows

    rows, columns = grid_rows(ctx.obj["db_path"], task, model)
    click.echo(render_rows(rows, columns, fmt, digits=2))


COMMANDS = [protocol, check, grid]
