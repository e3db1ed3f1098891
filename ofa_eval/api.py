"""The notebook API: the CLI's analyses as functions of a store path that return polars DataFrames.

    import ofa_eval
    table = ofa_eval.protocol("ofa-eval.duckdb", task="nli", strategy=["max-src-dev", "accumulative"])

Every function takes the store's path first and the command's options as keywords named like its
flags (`--draws 5 --seed 0` is `draws=5, seed=0`; repeatable flags take a string or a list;
`--ci 95` is `ci=95`). The numbers are the CLI's: the commands call these same functions and
render what they return (`--format csv` prints the frame's cells rounded to 6 decimals). What
the CLI prints as `note:` on stderr arrives here as an `OfaNote` warning; results are stored as
the commands store them (protocol_results and analysis_results views).

The `*_tables` functions return plain rows and notes; the commands render those. Nothing here
imports torch: making averaged models (`ofa-eval materialize`) stays a command.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ofa_eval.common.errors import OfaError

ANALYSES = ("tracking", "regret", "languages", "source_ranking")
COMPARE_TABLES = ("by_r", "by_language")


class OfaNote(UserWarning):
    """What a command prints as `note:` (a skipped pool or pair, repeated draws, automatic draws)."""


@dataclass
class Tables:
    """Named lists of row dicts, and the notes on what was skipped or is worth knowing."""

    tables: dict[str, list[dict]]
    notes: list[str] = field(default_factory=list)


def _names(value) -> tuple[str, ...]:
    """A flag that repeats: None, one name, or several."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def draw_options(draws: int | None = None, seed: int | None = None, replay: bool = False,
                 exclude_draws: Sequence[str] = ()):
    """`--draws/--seed/--replay/--exclude-draw` as `DrawOptions`: automatic where none is given
    (recorded draws for pools without weights, 10 fresh draws with seed 0 for the others)."""
    from ofa_eval.evaluation import DrawOptions

    exclude = _names(exclude_draws)
    given = replay or exclude or draws is not None or seed is not None
    return DrawOptions(replay=replay, exclude=exclude, n_draws=10 if draws is None else draws,
                       seed=0 if seed is None else seed, automatic=not given)


def resampling_options(ci: float, bootstrap: int, bootstrap_seed: int = 0, resample: str = "draws",
                       method: str = "percentile"):
    """`--ci/--bootstrap/--bootstrap-seed/--resample` as `ResamplingOptions` (ci in percent)."""
    from ofa_eval.evaluation import ResamplingOptions

    return ResamplingOptions(level=ci / 100, n_resamples=bootstrap, method=method, seed=bootstrap_seed,
                             resample=resample)


def pairs_for(strategy=None, variant=None, all_pairs: bool = False, soup_k: int = 5) -> list[tuple[str, str]]:
    """The (strategy, variant) pairs that --strategy/--variant/--all ask for (the paper's four by default)."""
    from ofa_eval.evaluation import strategy_pairs

    if all_pairs:
        return strategy_pairs((), (), soup_k)
    return strategy_pairs(_names(strategy), _names(variant), soup_k)


def parse_pair(text: str, soup_k: int = 5) -> tuple[str, str]:
    """`accumulative:ca` -> ('accumulative', 'ca'), checked against the strategy registry."""
    from ofa_eval.evaluation import strategy_pairs

    if ":" not in text:
        raise OfaError(f"{text!r}: write a pair as STRATEGY:VARIANT, e.g. accumulative:ca")
    strategy, variant = text.split(":", 1)
    return strategy_pairs((strategy,), (variant,), soup_k)[0]


def _store(db, **kwargs):
    from ofa_eval.store.database import connected

    return connected(str(db), **kwargs)


def _writing(db):
    """A read-write connection in one transaction (results are recorded as the commands record them)."""
    import contextlib

    from ofa_eval.store.database import transaction

    stack = contextlib.ExitStack()
    con = stack.enter_context(_store(db, must_exist=True))
    stack.enter_context(transaction(con))
    return stack, con


# -- rows and notes (what the commands render) ---------------------------------------------------------------------

def protocol_tables(db, task=None, model=None, strategy=None, variant=None, *, all_pairs: bool = False,
                    draws: int | None = None, seed: int | None = None, replay: bool = False,
                    exclude_draws: Sequence[str] = (), max_runs: int | None = None, soup_k: int = 5,
                    exact: bool = False, ci: float | None = None, ci_method: str = "percentile",
                    resample: str = "draws", bootstrap: int = 10_000, bootstrap_seed: int = 0) -> Tables:
    """`protocol`'s rows (table "protocol") and notes; see `protocol`."""
    from ofa_eval.evaluation import compute_protocol, pools_in_store

    tasks, models = _names(task), _names(model)
    interval = None
    if ci is not None:
        interval = resampling_options(ci, bootstrap, bootstrap_seed, resample, ci_method)
    elif resample != "draws":
        raise OfaError("--resample applies to a confidence interval: add --ci 95")
    pairs = pairs_for(strategy, variant, all_pairs, soup_k)
    if exact:
        return Tables({"protocol": _exact_rows(db, tasks, models, pairs, max_runs)})
    stack, con = _writing(db)
    with stack:
        rows, notes = compute_protocol(con, pools_in_store(con, tasks, models), pairs,
                                       draw_options(draws, seed, replay, exclude_draws), max_runs, soup_k,
                                       skip_incomplete=not (tasks and models), interval=interval,
                                       skip_missing_pairs=not (all_pairs or strategy or variant))
    return Tables({"protocol": rows}, notes)


def _exact_rows(db, tasks, models, pairs, max_runs) -> list[dict]:
    from ofa_eval.evaluation import exact_rows, load_pool, pools_in_store, record_results

    rows = []
    stack, con = _writing(db)
    with stack:
        for task, model in pools_in_store(con, tasks, models):
            pool_rows = exact_rows(load_pool(con, task, model), pairs, max_runs)
            record_results(con, pool_rows, {"draws": "exact", "max_runs": max(r["runs"] for r in pool_rows)})
            rows += pool_rows
    return rows


def _pool_results(con, tasks, models, analyse) -> tuple[list, list[str]]:
    """`analyse(pool)` for every chosen pool. Where the pools were not named, one that lacks what
    the analysis needs (recorded draws, averaged models) is skipped with a note."""
    from ofa_eval.evaluation import IncompletePool, load_pool, pools_in_store

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


def _recorded(con, kind: str, found, settings: dict, names) -> Tables:
    """Every pool's tables joined, each stored (analysis_results view) as `kind` + name."""
    from ofa_eval.evaluation import record_analysis

    found, notes = found
    tables: dict[str, list[dict]] = {name: [] for name in names}
    for task, model, pool_results in found:
        notes += pool_results.notes
        for name, rows in pool_results.items():
            tables[name] += rows
            record_analysis(con, f"{kind}{name}", task, model, rows, settings)
    return Tables(tables, list(dict.fromkeys(notes)))


def _settings(options, exclude_draws, bootstrap: int, ci: float, bootstrap_seed: int, **extra) -> dict:
    """What is stored with an analysis result so that it can be reproduced."""
    draws = "automatic" if options.automatic else "recorded" if options.replay else "sampled"
    return {"draws": draws, "seed": options.seed, "excluded": list(_names(exclude_draws)), **extra,
            "bootstrap": bootstrap, "ci": ci, "bootstrap_seed": bootstrap_seed}


def correlate_tables(db, task=None, model=None, strategy=None, variant=None, *, all_pairs: bool = False,
                     draws: int | None = None, seed: int | None = None, replay: bool = False,
                     exclude_draws: Sequence[str] = (), max_runs: int | None = None, soup_k: int = 5,
                     ci: float = 95.0, bootstrap: int = 2000, bootstrap_seed: int = 0) -> Tables:
    """`correlate`'s four tables and notes; see `correlate`."""
    from ofa_eval.results.analysis import correlate_pool

    tasks, models = _names(task), _names(model)
    pairs, options = pairs_for(strategy, variant, all_pairs, soup_k), draw_options(draws, seed, replay, exclude_draws)
    resampling = resampling_options(ci, bootstrap, bootstrap_seed)
    settings = _settings(options, exclude_draws, bootstrap, ci, bootstrap_seed, max_runs=max_runs)
    skip_missing = not (all_pairs or strategy or variant)
    stack, con = _writing(db)
    with stack:
        found = _pool_results(con, tasks, models, lambda pool: correlate_pool(
            con, pool, pairs, options, max_runs, resampling, skip_missing=skip_missing))
        return _recorded(con, "", found, settings, ANALYSES)


def compare_tables(db, a: str = "accumulative:ca", b: str = "max-src-dev:src-dev", task=None, model=None, *,
                   draws: int | None = None, seed: int | None = None, replay: bool = False,
                   exclude_draws: Sequence[str] = (), max_runs: int | None = None, soup_k: int = 5,
                   ci: float = 95.0, resample: str = "draws", bootstrap: int = 2000, bootstrap_seed: int = 0,
                   correction: str = "holm") -> Tables:
    """`compare`'s tables ("by_r", "by_language") and notes; see `compare`."""
    from ofa_eval.results.analysis import compare_pool

    options = draw_options(draws, seed, replay, exclude_draws)
    resampling = resampling_options(ci, bootstrap, bootstrap_seed, resample)
    pair_a, pair_b = parse_pair(a, soup_k), parse_pair(b, soup_k)
    settings = {"a": a, "b": b, **_settings(options, exclude_draws, bootstrap, ci, bootstrap_seed,
                                            correction=correction, resample=resample)}
    stack, con = _writing(db)
    with stack:
        found = _pool_results(con, _names(task), _names(model), lambda pool: compare_pool(
            con, pool, pair_a, pair_b, options, max_runs, resampling, correction))
        return _recorded(con, "compare_", found, settings, COMPARE_TABLES)


# -- DataFrames (the notebook's face) -------------------------------------------------------------------------------

def _frame(rows: list[dict], columns: Sequence[str] | None = None):
    import polars as pl

    if not rows:
        return pl.DataFrame(schema=list(columns or []))
    frame = pl.from_dicts(rows, infer_schema_length=None)
    return frame.select(columns) if columns else frame


def _warn(notes: list[str]) -> None:
    for note in dict.fromkeys(notes):
        warnings.warn(note, OfaNote, stacklevel=3)


def _frames(result: Tables) -> dict:
    return {name: _frame(rows) for name, rows in result.tables.items()}


def protocol(db, task=None, model=None, strategy=None, variant=None, **options):
    """The resampling protocol (`ofa-eval protocol`): one row per pool, strategy, variant and r.

    Columns: task, model, strategy, variant, runs, mean, std, draws, distinct_draws (and ci_low,
    ci_high with `ci`). Options, as the command's flags: all_pairs, draws, seed, replay,
    exclude_draws, max_runs, soup_k, exact, ci (percent), ci_method ('percentile' or 'bca'),
    resample ('draws' or 'draws+examples'), bootstrap, bootstrap_seed.
    """
    from ofa_eval.results.formatting import PROTOCOL_COLUMNS, OPTIONAL_PROTOCOL_COLUMNS

    result = protocol_tables(db, task, model, strategy, variant, **options)
    _warn(result.notes)
    rows = result.tables["protocol"]
    extra = [c for c in OPTIONAL_PROTOCOL_COLUMNS if any(c in row for row in rows)]
    return _frame(rows, list(PROTOCOL_COLUMNS) + extra)


def correlate(db, task=None, model=None, strategy=None, variant=None, **options) -> dict:
    """How each strategy tracks the oracle (`ofa-eval correlate`): {"tracking", "regret",
    "languages", "source_ranking"} -> DataFrame. Options: all_pairs, draws, seed, replay,
    exclude_draws, max_runs, soup_k, ci, bootstrap, bootstrap_seed."""
    result = correlate_tables(db, task, model, strategy, variant, **options)
    _warn(result.notes)
    return _frames(result)


def compare(db, a: str = "accumulative:ca", b: str = "max-src-dev:src-dev", task=None, model=None,
            **options) -> dict:
    """Paired difference A - B (`ofa-eval compare`): {"by_r", "by_language"} -> DataFrame.
    Options: draws, seed, replay, exclude_draws, max_runs, soup_k, ci, resample, bootstrap,
    bootstrap_seed, correction ('holm' or 'bh')."""
    result = compare_tables(db, a, b, task, model, **options)
    _warn(result.notes)
    return _frames(result)


def language_gains(db, task: str, model: str, a: str = "accumulative:ca", b: str = "max-src-dev:src-dev", *,
                   r: int | None = None, draws: int | None = None, seed: int | None = None, replay: bool = False,
                   exclude_draws: Sequence[str] = (), max_runs: int | None = None, ci: float = 95.0,
                   bootstrap: int = 2000, bootstrap_seed: int = 0, examples: bool | None = None):
    """The gain of A over B in each target language at r runs (default: the largest), with a paired
    bootstrap interval over distinct draws (and test examples where the store has them; `examples`
    True requires them, False never uses them). The report's per-language table; one row per language."""
    from ofa_eval.results.analysis import language_gains as pool_gains

    with _store(db, read_only=True) as con:
        return pool_gains(con, task, model, parse_pair(a), parse_pair(b), r,
                          draw_options(draws, seed, replay, exclude_draws),
                          resampling_options(ci, bootstrap, bootstrap_seed), examples, max_runs)


def sql_rows(db, query: str) -> tuple[list[str], list[dict]] | None:
    """`sql`'s columns and rows (None for a statement without a result); see `sql`."""
    from ofa_eval.store.read_only_sql import run_query

    with _store(db, read_only=True) as con:
        return run_query(con, query)


def sql(db, query: str):
    """A read-only query over the store's views (`ofa-eval sql`), as a DataFrame. The store is
    opened read-only and only statements that read run (SELECT, PIVOT, EXPLAIN); see docs/store.md."""
    result = sql_rows(db, query)
    if result is None:
        return _frame([])
    columns, rows = result
    return _frame(rows, columns)


def grid_rows(db, task: str, model: str) -> tuple[list[dict], list[str]]:
    """`grid`'s rows and columns; see `grid`."""
    from ofa_eval.results.hyperparameters import grid_rows as pool_grid_rows

    with _store(db, read_only=True) as con:
        return pool_grid_rows(con, task, model)


def grid(db, task: str, model: str):
    """The per-hyperparameter table (`ofa-eval grid`, the paper's Table 3) as a DataFrame."""
    rows, columns = grid_rows(db, task, model)
    return _frame(rows, columns)


def figures(db, task=None, model=None, strategy=None, variant=None, *, all_pairs: bool = False,
            draws: int | None = None, seed: int | None = None, replay: bool = False,
            exclude_draws: Sequence[str] = (), max_runs: int | None = None, soup_k: int = 5, ci: float = 95.0,
            bootstrap: int = 2000, bootstrap_seed: int = 0) -> dict:
    """The report's figures as matplotlib Figures, {"<task>-<model>-curves" | "-language-gain" |
    "-source-vs-target": Figure}: the same figures `ofa-eval report` saves under those names."""
    from ofa_eval.results.report import report_sections

    with _store(db, read_only=True) as con:
        contents = report_sections(con, _pools(con, task, model), pairs_for(strategy, variant, all_pairs, soup_k),
                                   draw_options(draws, seed, replay, exclude_draws), max_runs,
                                   resampling_options(ci, bootstrap, bootstrap_seed),
                                   skip_missing=not (all_pairs or strategy or variant),
                                   skip_pools=not (task and model))
    _warn(contents.notes)
    return contents.figures


def report_files(db, out, task=None, model=None, strategy=None, variant=None, *, all_pairs: bool = False,
                 draws: int | None = None, seed: int | None = None, replay: bool = False,
                 exclude_draws: Sequence[str] = (), max_runs: int | None = None, soup_k: int = 5,
                 ci: float = 95.0, bootstrap: int = 2000, bootstrap_seed: int = 0) -> tuple[Path, Path, list[str]]:
    """`report`'s two files and its notes; see `report`."""
    from ofa_eval.results.report import write_report

    with _store(db, read_only=True) as con:
        return write_report(con, _pools(con, task, model), pairs_for(strategy, variant, all_pairs, soup_k),
                            draw_options(draws, seed, replay, exclude_draws), max_runs, Path(out),
                            resampling_options(ci, bootstrap, bootstrap_seed),
                            skip_missing=not (all_pairs or strategy or variant), skip_pools=not (task and model))


def report(db, out, task=None, model=None, strategy=None, variant=None, **options) -> tuple[Path, Path]:
    """Write `out`/report.md and report.html with their figures (`ofa-eval report`); their paths.
    Options as for `figures`."""
    md_path, html_path, notes = report_files(db, out, task, model, strategy, variant, **options)
    _warn(notes)
    return md_path, html_path


def _pools(con, task, model) -> list[tuple[str, str]]:
    from ofa_eval.evaluation import pools_in_store

    return pools_in_store(con, _names(task), _names(model))
