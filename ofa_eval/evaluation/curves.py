"""Curves: each (strategy, variant) pair's score for every draw at r = 1..R, and their summary.

A curve is an (n_draws, max_runs) matrix of target scores: the unweighted mean over the task's
target-language test sets of the model its strategy picks for that cell, in percent. Protocol
rows are the mean and the sample standard deviation over draws, per r.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ofa_eval.statistics.draw_diversity import describe_repeats, distinct_draws
from ofa_eval.common.errors import OfaError
from ofa_eval.evaluation.draws import DrawOptions, DrawSet
from ofa_eval.evaluation.pool import IncompletePool, Pool, load_pool
from ofa_eval.evaluation.recording import record_results
from ofa_eval.evaluation.resampling import ResamplingOptions, interval_bounds
from ofa_eval.evaluation.strategies import MissingAverages, curve_models, get_strategy


def draw_scores(pool: Pool, draws: DrawSet, strategy: str, variant: str, max_runs: int) -> np.ndarray:
    """Scores of shape (n_draws, max_runs): the strategy's score for each draw at r = 1..R."""
    models = curve_models(pool, draws, strategy, variant, max_runs)
    out = np.full((len(draws.runs), max_runs), math.nan)
    missing = []
    for d, row in enumerate(models):
        for r, (kind, name, identity) in enumerate(row):
            score = pool.target_test[name][identity] if kind == "run" else pool.averages.get((name, identity))
            if score is None:
                missing.append((name, [pool.external_id[run_id] for run_id in draws.runs[d][:r + 1]]))
            else:
                out[d, r] = score
    if missing:
        raise MissingAverages(pool.task, pool.model, missing)
    return out


@dataclass(frozen=True)
class Skipped:
    """What could not be computed, and why, for notes and the report."""

    pool: str  # 'nli/xlm-v-base'
    what: str  # 'accumulative ca', or '' for the whole pool
    reason: str
    error: str = ""  # the error where it cannot be skipped (names what is missing)

    def __str__(self) -> str:
        return skip_notes([self])[0]


def skip_notes(skipped: list[Skipped]) -> list[str]:
    """One line per pool and reason: 'skipped ner/x: accumulative last and soup top5: reason'."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for gap in skipped:
        grouped.setdefault((gap.pool, gap.reason), []).append(gap.what)
    return [f"skipped {pool}: " + (f"{listed(whats)}: " if all(whats) else "") + reason
            for (pool, reason), whats in grouped.items()]


def listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def available_curves(con, pool: Pool, pairs, options: DrawOptions, max_runs: int):
    """`pair_curves` for the pairs that can be computed: (common draws, curves, [Skipped]) where
    a pair needs averaged models the store has no scores for."""
    options = options.for_pool(con, pool)
    common = options.draws_for(con, pool, max_runs)
    curves, skipped = {}, []
    for strategy, variant in pairs:
        recipe = get_strategy(strategy).recipe(variant)
        draws = options.draws_for(con, pool, max_runs, recipe) if options.replay and recipe else common
        try:
            curves[(strategy, variant)] = (draws, draw_scores(pool, draws, strategy, variant, max_runs))
        except MissingAverages as gap:
            skipped.append(Skipped(pool.name, f"{strategy} {variant}", missing_reason(con, pool, gap),
                                   describe_missing([gap], hint=_missing_hint(pool))))
    return common, curves, skipped


def pair_curves(con, pool: Pool, pairs, options: DrawOptions, max_runs: int):
    """The draws and the (n_draws, max_runs) score matrix of every pair, and the common draws.

    Replayed averaging recipes use their own recorded order where the release has one. A pair
    whose averaged models the store lacks is an error (IncompletePool) naming them.
    """
    common, curves, skipped = available_curves(con, pool, pairs, options, max_runs)
    if skipped:
        raise IncompletePool(skipped[0].error, str(skipped[0]).removeprefix("skipped "))
    return common, curves


def summarize(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (n-1) over draws, per r."""
    mean = scores.mean(axis=0)
    std = scores.std(axis=0, ddof=1) if scores.shape[0] > 1 else np.full(scores.shape[1], np.nan)
    return mean, std


def protocol_rows(pool: Pool, curves: dict, max_runs: int, bounds: dict | None = None) -> list[dict]:
    """Long rows with the protocol CSV's columns, for every pair and r (plus ci_low/ci_high
    where `bounds` maps the pair to its interval endpoints over r).

    `distinct_draws` counts the different sets of runs among the draws at r: where draws
    repeat (few configurations or seeds), they are fewer pieces of evidence than `draws`.
    """
    rows = []
    for (strategy, variant), (draws, scores) in curves.items():
        mean, std = summarize(scores)
        distinct = distinct_draws(draws.runs, max_runs)
        for r in range(max_runs):
            row = {"task": pool.task, "model": pool.model, "strategy": strategy, "variant": variant,
                   "runs": r + 1, "mean": float(mean[r]),
                   "std": None if math.isnan(std[r]) else float(std[r]), "draws": len(draws.runs),
                   "distinct_draws": distinct[r]}
            if bounds is not None:
                low, high = bounds[(strategy, variant)]
                undefined = math.isnan(low[r])  # every draw at r holds the same runs
                row.update(ci_low=None if undefined else float(low[r]), ci_high=None if undefined else float(high[r]))
            rows.append(row)
    return rows


def compute_protocol(con, pools: list[tuple[str, str]], pairs, options: DrawOptions, max_runs: int,
                     soup_k: int, record: bool = True, skip_incomplete: bool = False,
                     interval: ResamplingOptions | None = None,
                     skip_missing_pairs: bool = False) -> tuple[list[dict], list[str]]:
    """Protocol rows for every pool, and notes on what was skipped.

    A pool is incomplete when it has no recorded draws to replay or lacks averaged models a
    strategy needs: that is an error, unless `skip_incomplete` (the pools were not named by
    the user), when it is skipped with a note. With `skip_missing_pairs` (the pairs were not
    named), a pair whose averaged models are missing is skipped with a note and the pool's
    other pairs are still computed.
    """
    if max_runs is not None and max_runs < 1:
        raise OfaError("--max-runs must be at least 1")
    rows, notes, errors = [], [], []
    for task, model in pools:
        try:
            pool = load_pool(con, task, model)
            pool_rows, skipped = _pool_protocol(con, pool, pairs, options, max_runs, soup_k, record, interval,
                                                skip_missing_pairs)
            rows += pool_rows
            notes += options.automatic_notes(con, pool) + skip_notes(skipped) + _repeat_notes(pool_rows)
        except IncompletePool as gap:
            if not skip_incomplete:
                raise OfaError(str(gap)) from None
            notes.append(f"skipped {gap.short}")
            errors.append(str(gap))
    if not rows and errors:
        raise OfaError(errors[0])
    return rows, notes


def _pool_protocol(con, pool: Pool, pairs, options: DrawOptions, max_runs: int, soup_k: int, record: bool,
                   interval: ResamplingOptions | None, skip_missing_pairs: bool):
    max_runs = options.max_runs_for(con, pool, max_runs)
    common, curves, skipped = available_curves(con, pool, pairs, options, max_runs)
    if skipped and not (skip_missing_pairs and curves):
        raise IncompletePool(skipped[0].error, skip_notes(skipped)[0].removeprefix("skipped "))
    bounds = interval_bounds(con, pool, curves, max_runs, interval) if interval else None
    pool_rows = protocol_rows(pool, curves, max_runs, bounds)
    if record:
        settings = {**common.description, "max_runs": max_runs, "soup_k": soup_k}
        if interval:
            settings["interval"] = interval.settings()
        record_results(con, pool_rows, settings)
    return pool_rows, skipped


def _repeat_notes(rows: list[dict]) -> list[str]:
    """One note per pool and draw set whose draws repeat at some r."""
    by_draws: dict[tuple, list[dict]] = {}
    for row in rows:
        by_draws.setdefault((row["task"], row["model"], row["strategy"], row["variant"]), []).append(row)
    notes = {}
    for (task, model, *_), pair_rows in by_draws.items():
        line = describe_repeats([row["distinct_draws"] for row in pair_rows], pair_rows[0]["draws"])
        if line:
            notes.setdefault(f"{task}/{model}: draws repeat: {line}", None)
    return list(notes)


def describe_missing(gaps: list[MissingAverages], limit: int = 3, hint: str = "") -> str:
    """One line naming the averaged models the store lacks, for the error message."""
    parts = []
    for gap in gaps:
        unique = list(dict.fromkeys((recipe, tuple(members)) for recipe, members in gap.member_sets))
        shown = "; ".join(f"{recipe} of [{', '.join(members)}]" for recipe, members in unique[:limit])
        more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
        parts.append(f"{gap.task}/{gap.model}: {len(unique)} averaged model(s) have no scores: {shown}{more}")
    return " | ".join(parts) + (hint or " (materialize them with `ofa-eval materialize`, or choose other strategies)")


def _missing_hint(pool: Pool) -> str:
    if pool.has_weights:
        return ""
    return (" (the store has no weights of these runs to make them, as for released results: --replay the draws "
            "recorded with them where there are any, or choose strategies that select runs)")


def missing_reason(con, pool: Pool, gap: MissingAverages) -> str:
    """Why a pair cannot be computed, with what can be done about it: materialize where the weights
    are in the store; where they are not (released results), only other draws or strategies help."""
    n = len({(recipe, tuple(members)) for recipe, members in gap.member_sets})
    if pool.has_weights:
        return f"{n} averaged model(s) not made yet (make them with `ofa-eval materialize` or --materialize)"
    recorded = con.execute("SELECT count(*) FROM draw_table WHERE task=? AND model=?", [pool.task, pool.model])
    instead = ("released results score the averages of their recorded draws only: --replay them"
               if recorded.fetchone()[0] else
               "and no draws of this pool were recorded with the release: only strategies that select runs work")
    return f"{n} averaged model(s) have no scores, and the store has no weights of these runs to make them ({instead})"
