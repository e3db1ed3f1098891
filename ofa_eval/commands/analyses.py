"""Commands that analyse protocol curves: `correlate`, `compare` and `report`."""

from __future__ import annotations

import click

from ofa_eval.api import ANALYSES
from ofa_eval.commands.options import (draw_keywords, draw_options, draws_from, format_option, pairs_from,
                                       pool_options, resampling_keywords, resampling_options, selection_keywords,
                                       selection_options)


def _echo_tables(results: dict[str, list[dict]], names, fmt: str) -> None:
    import json

    from ofa_eval.results.formatting import render_rows

    if fmt == "json":
        return click.echo(json.dumps({name: results[name] for name in names}, indent=1))
    for name in names:
        rows = results[name]
        if rows:
            if fmt in ("table", "markdown"):
                click.echo(f"\n{name}")
            click.echo(render_rows(rows, list(rows[0]), fmt, digits=3))


def _echo_notes(notes: list[str]) -> None:
    for note in dict.fromkeys(notes):
        click.echo(f"note: {note}", err=True)


@click.command("correlate")
@selection_options
@draw_options
@click.option("--analysis", "analyses", multiple=True, type=click.Choice(ANALYSES),
              help="Which analysis to print (repeatable; default: all four).")
@resampling_options(2000, "the confidence intervals")
@format_option(["table", "csv", "json", "markdown"])
@click.pass_context
def correlate(ctx, analyses, fmt, **params):
    """How closely each strategy tracks the oracle, Max TRG-DEV.

    With --format json, one object maps each analysis to its rows. Every row is also stored
    (analysis_results view) with the settings and seeds that produced it.

    \b
    tracking        Pearson, Spearman and Kendall correlation with the oracle over every
                    (draw, r) cell; CI by resampling whole draws
    regret          oracle minus strategy for each r, with a CI over draws
    languages       at r = R, correlation across target languages of per-language scores
    source_ranking  per target language, Spearman between the runs' source-language validation score
                    and their test score in that language
    """
    from ofa_eval.api import correlate_tables

    result = correlate_tables(ctx.obj["db_path"], **selection_keywords(params), **draw_keywords(params),
                              **resampling_keywords(params))
    _echo_notes(result.notes)
    _echo_tables(result.tables, analyses or ANALYSES, fmt)


@click.command("compare")
@click.argument("a", default="accumulative:ca")
@click.argument("b", default="max-src-dev:src-dev")
@pool_options
@draw_options
@resampling_options(2000, "the intervals and randomization tests", resample=True)
@click.option("--correction", type=click.Choice(["holm", "bh"]), default="holm", show_default=True,
              help="Multiple-comparison correction across languages (Holm or Benjamini-Hochberg).")
@format_option(["table", "csv", "json", "markdown"])
@click.pass_context
def compare(ctx, a, b, correction, fmt, **params):
    """Paired difference A - B of two strategy/variant pairs (default: accumulative:ca max-src-dev:src-dev).

    Both are evaluated on the same draws. For each r: the mean difference over draws with a
    bootstrap CI and P(A > B), the share of draws where A beats B (ties count half); with
    --resample draws+examples the CIs also resample target test examples, paired. Per
    target language at r = R: the mean difference and a paired sign-flip randomization test,
    corrected across languages. Without --task and --model, a pool that lacks what A or B
    needs (recorded draws, averaged models) is skipped with a note.
    """
    from ofa_eval.api import compare_tables

    result = compare_tables(ctx.obj["db_path"], a, b, **selection_keywords(params), **draw_keywords(params),
                            **resampling_keywords(params), correction=correction)
    _echo_notes(result.notes)
    _echo_tables(result.tables, list(result.tables), fmt)


@click.command("report")
@click.argument("out", type=click.Path(file_okay=False))
@selection_options
@draw_options
@click.option("--materialize", is_flag=True,
              help="First make and score the averaged models the draws need (see `ofa-eval materialize`).")
@resampling_options(2000, "the confidence bands")
@click.pass_context
def report(ctx, out, materialize, **params):
    """Write OUT/report.md and OUT/report.html with tables and figures (PNG and SVG).

    Per task and model: what was evaluated (source and target languages with their set sizes,
    configurations, seeds, draws), the protocol table, score against r with confidence bands
    for every strategy, the per-language gain of accumulative CA averaging over Max SRC-DEV
    (a table and a figure with bootstrap intervals), and source-language validation against
    mean target test score across runs. With the default strategies and pools, what cannot be
    computed (averaged models that are missing, pools without recorded draws to replay) is
    left out and listed in the report's Skipped section and on stderr.
    """
    from ofa_eval.api import report_files

    db_path = ctx.obj["db_path"]
    if materialize:
        from ofa_eval.commands.pipeline import materialize_here

        materialize_here(db_path, params["tasks"], params["models"], pairs_from(params), draws_from(params),
                         params["max_runs"])
    md_path, html_path, notes = report_files(db_path, out, **selection_keywords(params), **draw_keywords(params),
                                             **resampling_keywords(params))
    _echo_notes(notes)
    click.echo(f"wrote {md_path} and {html_path}")


COMMANDS = [correlate, compare, report]
