"""Commands that analyse protocol curves: `correlate`, `compare` and `report`."""

from __future__ import annotations

import click

from ofa_eval.commands.options import (draw_options, draws_from, format_option, pairs_from, pairs_named, parse_pair,
                                       pool_options, resampling_from, resampling_options, selection_options)

ANALYSES = ("tracking", "regret", "languages", "source_ranking")


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


def _settings(params: dict, **extra) -> dict:
    """What is stored with an analysis result so that it can be reproduced."""
    options = draws_from(params)
    draws = "automatic" if options.automatic else "recorded" if options.replay else "sampled"
    return {"draws": draws, "seed": options.seed, "excluded": list(params["exclude"]), **extra,
            "bootstrap": params["n_resamples"], "ci": params["ci_percent"], "bootstrap_seed": params["bootstrap_seed"]}


def _pool_results(con, tasks, models, analyse) -> tuple[list, list[str]]:
    """`analyse(pool)` for every chosen pool. Where the pools were not named, one that lacks what
    the analysis needs (recorded draws, averaged models) is skipped with a note."""
    from ofa_eval.protocol import IncompletePool, load_pool, pools_in_store

    found, notes, errors = [], [], []
    for task, model in pools_in_store(con, tasks, models):
        try:
            found.append((task, model, analyse(load_pool(con, task, model))))
        except IncompletePool as gap:
            if tasks and models:
                raise
            notes.append(f"skipped {gap.short}")
            errors.append(gap)
    if not found:
        raise errors[0]
    return found, notes


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
    from ofa_eval.results.analysis import correlate_pool
    from ofa_eval.protocol import record_analysis
    from ofa_eval.store.database import connected, transaction

    resampling, pairs, options = resampling_from(params), pairs_from(params), draws_from(params)
    settings = _settings(params, max_runs=params["max_runs"])
    results: dict[str, list[dict]] = {name: [] for name in ANALYSES}
    with connected(ctx.obj["db_path"], must_exist=True) as con, transaction(con):
        found, notes = _pool_results(con, params["tasks"], params["models"], lambda pool: correlate_pool(
            con, pool, pairs, options, params["max_runs"], resampling, skip_missing=not pairs_named(params)))
        for task, model, pool_results in found:
            notes += pool_results.notes
            for name, rows in pool_results.items():
                results[name] += rows
                record_analysis(con, name, task, model, rows, settings)
    _echo_notes(notes)
    _echo_tables(results, analyses or ANALYSES, fmt)


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
    from ofa_eval.results.analysis import compare_pool
    from ofa_eval.protocol import record_analysis
    from ofa_eval.store.database import connected, transaction

    resampling, options = resampling_from(params), draws_from(params)
    pair_a, pair_b = parse_pair(a, params["soup_k"]), parse_pair(b, params["soup_k"])
    settings = {"a": a, "b": b, **_settings(params, correction=correction, resample=resampling.resample)}
    results = {"by_r": [], "by_language": []}
    with connected(ctx.obj["db_path"], must_exist=True) as con, transaction(con):
        found, notes = _pool_results(con, params["tasks"], params["models"], lambda pool: compare_pool(
            con, pool, pair_a, pair_b, options, params["max_runs"], resampling, correction))
        for task, model, pool_results in found:
            notes += pool_results.notes
            for name, rows in pool_results.items():
                results[name] += rows
                record_analysis(con, f"compare_{name}", task, model, rows, settings)
    _echo_notes(notes)
    _echo_tables(results, list(results), fmt)


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
    from pathlib import Path

    from ofa_eval.protocol import pools_in_store
    from ofa_eval.results.report import write_report
    from ofa_eval.store.database import connected

    resampling, pairs, options, db_path = resampling_from(params), pairs_from(params), draws_from(params), \
        ctx.obj["db_path"]
    if materialize:
        from ofa_eval.commands.pipeline import materialize_here

        materialize_here(db_path, params["tasks"], params["models"], pairs, options, params["max_runs"])
    with connected(db_path, read_only=True) as con:
        md_path, html_path, notes = write_report(
            con, pools_in_store(con, params["tasks"], params["models"]), pairs, options, params["max_runs"], Path(out),
            resampling, skip_missing=not pairs_named(params), skip_pools=not (params["tasks"] and params["models"]))
    _echo_notes(notes)
    click.echo(f"wrote {md_path} and {html_path}")


COMMANDS = [correlate, compare, report]
