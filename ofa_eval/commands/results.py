"""Commands that compute results from the store: `protocol`, `check` and `grid`."""

from __future__ import annotations

import click

FORMATS = ["table", "csv", "json", "markdown", "latex"]


def draw_options(function):
    """The draw options shared by `protocol` and `check`."""
    options = [
        click.option("--draws", "n_draws", type=int, default=10, show_default=True,
                     help="Number of fresh random draws (ignored with --replay)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fresh draws."),
        click.option("--replay", is_flag=True, help="Use the draws recorded in the store instead of sampling."),
        click.option("--exclude-draw", "exclude", multiple=True,
                     help="Leave a recorded draw out (repeatable); the paper left out draw 1."),
        click.option("--max-runs", "-R", "max_runs", type=int,
                     help="Largest number of runs r per draw (default: 10, or a pool's number of "
                          "learning-rate/batch-size configurations where that is smaller)."),
        click.option("--soup-k", type=int, default=5, show_default=True, help="Snapshots averaged by SOUP."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _options(replay, exclude, n_draws, seed):
    from ofa_eval.protocol import DrawOptions

    return DrawOptions(replay=replay, exclude=tuple(exclude), n_draws=n_draws, seed=seed)


def selection_options(function):
    """Which pools and strategy/variant pairs: shared by `protocol` and `materialize`."""
    options = [
        click.option("--task", "tasks", multiple=True, help="Task(s) to evaluate (default: every task in the store)."),
        click.option("--model", "models", multiple=True,
                     help="Model(s) to evaluate (default: every model in the store)."),
        click.option("--strategy", "strategies", multiple=True, metavar="NAME",
                     help="max-src-dev, max-trg-dev, accumulative, soup or greedy-soup (repeatable; default: "
                          "the paper's four, as with --all)."),
        click.option("--variant", "variants", multiple=True, metavar="NAME",
                     help="last, src-dev, ca or trg-dev (repeatable; default: every variant the strategy takes)."),
        click.option("--all", "all_pairs", is_flag=True,
                     help="Every strategy/variant pair of the paper's Tables 1 and 2."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _pairs(strategies, variants, all_pairs, soup_k):
    from ofa_eval.protocol import strategy_pairs

    return strategy_pairs(() if all_pairs else strategies, () if all_pairs else variants, soup_k)


@click.command("protocol")
@selection_options
@draw_options
@click.option("--materialize", is_flag=True,
              help="First make and score the averaged models the draws need (see `ofa-eval materialize`).")
@click.option("--exact", is_flag=True,
              help="Selection strategies in closed form over every possible draw instead of sampled draws.")
@click.option("--ci", "ci_percent", type=float, help="Add a bootstrap confidence interval (over draws) of the "
              "mean at this level, e.g. 95: columns ci_low, ci_high.")
@click.option("--bootstrap", "n_resamples", type=int, default=10_000, show_default=True,
              help="Bootstrap resamples for --ci.")
@click.option("--ci-method", type=click.Choice(["percentile", "bca"]), default="percentile", show_default=True)
@click.option("--bootstrap-seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--resample", type=click.Choice(["draws", "draws+examples"]), default="draws", show_default=True,
              help="What --ci resamples: whole draws, or draws and the target test examples jointly "
              "(needs ingested runs' per-example statistics).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def protocol(ctx, tasks, models, strategies, variants, all_pairs, n_draws, seed, replay, exclude, max_runs,
             soup_k, materialize, exact, ci_percent, n_resamples, ci_method, bootstrap_seed, resample, fmt):
    """Run the resampling protocol and print mean and std over draws for r = 1..R.

    \b
    Strategies and variants:
      max-src-dev   last | src-dev | ca   pick the run with the best English validation score
      max-trg-dev   trg-dev               pick the run with the best target validation (oracle)
      accumulative  last | src-dev | ca   average the weights of the first r runs
      soup          (top-k)               average the k best snapshots of the first r runs
      greedy-soup   last | src-dev | ca   Wortsman et al.'s greedy soup of the first r runs,
                                          ranked and grown on English validation

    Draws: --draws N --seed S samples N fresh draws (R distinct learning-rate/batch-size
    configurations in random order, one seed each); --replay uses the draws recorded in the
    store; --exact gives the selection strategies' expectation and std over every possible
    draw in closed form. Results are written to the store's protocol_results view.

    Intervals: --ci 95 adds a bootstrap interval of each mean. By default it resamples the
    draws (run-to-run variation only); --resample draws+examples also resamples the target
    test examples, stratified by language and shared by every run, average and strategy, so
    the interval covers test-set sampling too.
    """
    from ofa_eval.errors import OfaError
    from ofa_eval.formatting import render_protocol
    from ofa_eval.protocol import IntervalOptions, compute_protocol, pools_in_store
    from ofa_eval.store import connected, transaction

    interval = None
    if ci_percent is not None:
        if not 0 < ci_percent < 100 or n_resamples < 10:
            raise OfaError("--ci must be between 0 and 100 and --bootstrap at least 10")
        interval = IntervalOptions(ci_percent / 100, n_resamples, ci_method, bootstrap_seed, resample)
    elif resample != "draws":
        raise OfaError("--resample applies to a confidence interval: add --ci 95")
    pairs = _pairs(strategies, variants, all_pairs, soup_k)
    options = _options(replay, exclude, n_draws, seed)
    if exact:
        return _exact_protocol(ctx.obj["db_path"], tasks, models, pairs, max_runs, fmt)
    if materialize:
        from ofa_eval.commands.pipeline import materialize_needed

        materialize_needed(ctx.obj["db_path"], tasks, models, pairs, options, max_runs, out=None)
    with connected(ctx.obj["db_path"], must_exist=True) as con, transaction(con):
        pools = pools_in_store(con, tasks, models)
        rows, notes = compute_protocol(con, pools, pairs, options, max_runs, soup_k,
                                       skip_incomplete=not (tasks and models), interval=interval)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(render_protocol(rows, fmt))


def _exact_protocol(db_path, tasks, models, pairs, max_runs, fmt):
    from ofa_eval.formatting import render_protocol
    from ofa_eval.protocol import exact_rows, load_pool, pools_in_store, record_results
    from ofa_eval.store import connected, transaction

    rows = []
    with connected(db_path, must_exist=True) as con, transaction(con):
        for task, model in pools_in_store(con, tasks, models):
            pool_rows = exact_rows(load_pool(con, task, model), pairs, max_runs)
            record_results(con, pool_rows, {"draws": "exact", "max_runs": max(r["runs"] for r in pool_rows)})
            rows += pool_rows
    click.echo(render_protocol(rows, fmt))


@click.command("check")
@click.argument("tables", nargs=-1, required=True, type=click.Path(dir_okay=False))
@draw_options
@click.pass_context
def check(ctx, tables, n_draws, seed, replay, exclude, max_runs, soup_k):
    """Recompute every row of benchmark TABLES (protocol CSVs) and compare with the store.

    A table has the protocol CSV's columns (task,model,strategy,variant,runs,mean,std,draws)
    and an optional `tolerance` column (default 0.1, in points). An empty std or draws cell
    is not checked. Exits 1 listing every cell outside tolerance, 0 when all agree.
    """
    from ofa_eval.checking import check_tables

    failures, checked = check_tables(ctx.obj["db_path"], tables, _options(replay, exclude, n_draws, seed),
                                     soup_k)
    for line in failures:
        click.echo(line)
    click.echo(f"{checked} cells checked, {len(failures)} outside tolerance")
    if failures:
        ctx.exit(1)


@click.command("grid")
@click.option("--task", required=True, help="Task, e.g. nli, tydiqa, ner.")
@click.option("--model", required=True, help="Model, e.g. xlm-roberta-large.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def grid(ctx, task, model, fmt):
    """Per-hyperparameter table (the paper's Table 3): mean and std over seeds.

    For each (learning rate, batch size): the source validation score and the mean target
    test score of every variant (LAST, SRC-DEV, CA, TRG-DEV), mean and std over seeds.
    """
    from ofa_eval.formatting import render_rows
    from ofa_eval.hyperparameters import grid_rows
    from ofa_eval.store import connected

    with connected(ctx.obj["db_path"], read_only=True) as con:
        rows, columns = grid_rows(con, task, model)
    click.echo(render_rows(rows, columns, fmt, digits=2))


COMMANDS = [protocol, check, grid]


ANALYSES = ("tracking", "regret", "languages", "source_ranking")


@click.command("correlate")
@selection_options
@draw_options
@click.option("--analysis", "analyses", multiple=True, type=click.Choice(ANALYSES),
              help="Which analysis to print (repeatable; default: all four).")
@click.option("--bootstrap", "n_resamples", type=int, default=2000, show_default=True,
              help="Bootstrap resamples for the confidence intervals.")
@click.option("--ci", "ci_percent", type=float, default=95.0, show_default=True, help="Confidence level, percent.")
@click.option("--bootstrap-seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True)
@click.pass_context
def correlate(ctx, tasks, models, strategies, variants, all_pairs, n_draws, seed, replay, exclude, max_runs,
              soup_k, analyses, n_resamples, ci_percent, bootstrap_seed, fmt):
    """How closely each strategy tracks the oracle, Max TRG-DEV.

    With --format json, one object maps each analysis to its rows. Every row is also stored
    (analysis_results view) with the settings and seeds that produced it.

    \b
    tracking        Pearson, Spearman and Kendall correlation with the oracle over every
                    (draw, r) cell; CI by resampling whole draws
    regret          oracle minus strategy for each r, with a CI over draws
    languages       at r = R, correlation across target languages of per-language scores
    source_ranking  per target language, Spearman between the runs' English validation score
                    and their test score in that language
    """
    import json

    from ofa_eval.analysis import correlate_pool
    from ofa_eval.errors import OfaError
    from ofa_eval.formatting import render_rows
    from ofa_eval.protocol import load_pool, pools_in_store
    from ofa_eval.store import connected, transaction

    if not 0 < ci_percent < 100 or n_resamples < 10:
        raise OfaError("--ci must be between 0 and 100 and --bootstrap at least 10")
    pairs = _pairs(strategies, variants, all_pairs, soup_k)
    options = _options(replay, exclude, n_draws, seed)
    settings = json.dumps({"draws": "recorded" if replay else "sampled", "seed": seed, "excluded": list(exclude),
                           "max_runs": max_runs, "bootstrap": n_resamples, "ci": ci_percent,
                           "bootstrap_seed": bootstrap_seed})
    results: dict[str, list[dict]] = {name: [] for name in ANALYSES}
    with connected(ctx.obj["db_path"], must_exist=True) as con, transaction(con):
        for task, model in pools_in_store(con, tasks, models):
            pool_results = correlate_pool(con, load_pool(con, task, model), pairs, options, max_runs,
                                          n_resamples, ci_percent / 100, bootstrap_seed)
            for name, rows in pool_results.items():
                results[name] += rows
                con.executemany("INSERT INTO analysis_result_table (analysis, task, model, row, settings) "
                                "VALUES (?, ?, ?, ?, ?)",
                                [(name, task, model, json.dumps(row), settings) for row in rows])
    chosen = analyses or ANALYSES
    if fmt == "json":
        click.echo(json.dumps({name: results[name] for name in chosen}, indent=1))
        return
    for name in chosen:
        rows = results[name]
        if rows:
            if fmt in ("table", "markdown"):
                click.echo(f"\n{name}")
            click.echo(render_rows(rows, list(rows[0]), fmt, digits=3))


COMMANDS.append(correlate)


@click.command("report")
@click.argument("out", type=click.Path(file_okay=False))
@selection_options
@draw_options
@click.option("--bootstrap", "n_resamples", type=int, default=2000, show_default=True,
              help="Bootstrap resamples for the confidence bands.")
@click.option("--ci", "ci_percent", type=float, default=95.0, show_default=True, help="Confidence level, percent.")
@click.option("--bootstrap-seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.pass_context
def report(ctx, out, tasks, models, strategies, variants, all_pairs, n_draws, seed, replay, exclude, max_runs,
           soup_k, n_resamples, ci_percent, bootstrap_seed):
    """Write OUT/report.md and OUT/report.html with tables and figures (PNG and SVG).

    Per task and model: the protocol table, score against r with confidence bands for every
    strategy, the per-language gain of accumulative CA averaging over Max SRC-DEV, and English
    validation against mean target test score across runs.
    """
    from pathlib import Path

    from ofa_eval.protocol import pools_in_store
    from ofa_eval.report import write_report
    from ofa_eval.store import connected

    pairs = _pairs(strategies, variants, all_pairs, soup_k)
    with connected(ctx.obj["db_path"], read_only=True) as con:
        md_path, html_path = write_report(con, pools_in_store(con, tasks, models), pairs,
                                          _options(replay, exclude, n_draws, seed), max_runs, Path(out),
                                          n_resamples, ci_percent / 100, bootstrap_seed)
    click.echo(f"wrote {md_path} and {html_path}")


COMMANDS.append(report)


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--task", "tasks", multiple=True, help="Task(s) (default: every task in the store).")
@click.option("--model", "models", multiple=True, help="Model(s) (default: every model in the store).")
@draw_options
@click.option("--bootstrap", "n_resamples", type=int, default=2000, show_default=True,
              help="Bootstrap and randomization-test resamples.")
@click.option("--ci", "ci_percent", type=float, default=95.0, show_default=True, help="Confidence level, percent.")
@click.option("--bootstrap-seed", type=int, default=0, show_default=True, help="Seed of the resampling.")
@click.option("--correction", type=click.Choice(["holm", "bh"]), default="holm", show_default=True,
              help="Multiple-comparison correction across languages (Holm or Benjamini-Hochberg).")
@click.option("--resample", type=click.Choice(["draws", "draws+examples"]), default="draws", show_default=True,
              help="What the per-r intervals resample: whole draws, or draws and target test examples jointly.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True)
@click.pass_context
def compare(ctx, a, b, tasks, models, n_draws, seed, replay, exclude, max_runs, soup_k, n_resamples, ci_percent,
            bootstrap_seed, correction, resample, fmt):
    """Paired difference A - B of two strategy/variant pairs, e.g. accumulative:ca max-src-dev:src-dev.

    Both are evaluated on the same draws. For each r: the mean difference over draws with a
    bootstrap CI and P(A > B), the share of draws where A beats B (ties count half); with
    --resample draws+examples the CIs also resample target test examples, paired. Per
    target language at r = R: the mean difference and a paired sign-flip randomization test,
    corrected across languages.
    """
    import json

    from ofa_eval.analysis import compare_pool
    from ofa_eval.errors import OfaError
    from ofa_eval.formatting import render_rows
    from ofa_eval.protocol import load_pool, pools_in_store, strategy_pairs
    from ofa_eval.store import connected, transaction

    pairs = []
    for text in (a, b):
        if ":" not in text:
            raise OfaError(f"{text!r}: write a pair as STRATEGY:VARIANT, e.g. accumulative:ca")
        strategy, variant = text.split(":", 1)
        pairs.append(strategy_pairs((strategy,), (variant,), soup_k)[0])
    settings = json.dumps({"a": a, "b": b, "draws": "recorded" if replay else "sampled", "seed": seed,
                           "excluded": list(exclude), "bootstrap": n_resamples, "ci": ci_percent,
                           "bootstrap_seed": bootstrap_seed, "correction": correction, "resample": resample})
    results = {"by_r": [], "by_language": []}
    with connected(ctx.obj["db_path"], must_exist=True) as con, transaction(con):
        for task, model in pools_in_store(con, tasks, models):
            found = compare_pool(con, load_pool(con, task, model), pairs[0], pairs[1],
                                 _options(replay, exclude, n_draws, seed), max_runs, n_resamples,
                                 ci_percent / 100, bootstrap_seed, correction, resample)
            for name, rows in found.items():
                results[name] += rows
                con.executemany("INSERT INTO analysis_result_table (analysis, task, model, row, settings) "
                                "VALUES (?, ?, ?, ?, ?)",
                                [(f"compare_{name}", task, model, json.dumps(row), settings) for row in rows])
    if fmt == "json":
        click.echo(json.dumps(results, indent=1))
        return
    for name, rows in results.items():
        if rows:
            if fmt in ("table", "markdown"):
                click.echo(f"\n{name}")
            click.echo(render_rows(rows, list(rows[0]), fmt, digits=3))


COMMANDS.append(compare)
