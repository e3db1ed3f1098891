"""How closely each strategy tracks the oracle (Max TRG-DEV), and how well source-language
validation ranks runs.

- tracking: correlation of a strategy's score with the oracle's over every (draw, r) cell, with
  a bootstrap over draws (cells of one draw are resampled together);
- regret: oracle minus strategy, per r, with a bootstrap interval over draws;
- languages: at r = R, correlation across target languages of the strategy's and the oracle's
  per-language scores (mean over draws), with a bootstrap over languages;
- source ranking: per target language, the rank correlation between the runs' source-language
  validation score and their test score in that language.

Identical draws are one piece of evidence (ofa_eval.statistics.draw_diversity): intervals resample distinct
draws, randomization tests flip their signs together, and rows carry `distinct_draws`. The
estimates stay those over all draws, as `protocol` reports them. A correlation with a constant
is undefined: its row holds None and a note says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from ofa_eval.statistics import bootstrap
from ofa_eval.statistics.correlation import COEFFICIENTS, is_constant
from ofa_eval.statistics.draw_diversity import (describe_repeats, draw_groups, group_resample_counts,
                                               grouped_bootstrap_means, n_groups, paired_groups)
from ofa_eval.common.errors import OfaError
from ofa_eval.evaluation import (DrawOptions, Pool, ResamplingOptions, available_curves, curve_models, load_pool,
                               pair_curves)
from ofa_eval.evaluation.curves import skip_notes

ORACLE = ("max-trg-dev", "trg-dev")


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def fields(self) -> dict:
        """value, low and high for a result row: None where undefined (JSON null, an empty cell)."""
        return {name: None if math.isnan(number) else number for name, number in vars(self).items()}


UNDEFINED = Interval(math.nan, math.nan, math.nan)


def percentile_interval(value: float, samples: np.ndarray, level: float) -> Interval:
    """The estimate with the percentile interval of its bootstrap samples (undefined ones dropped);
    the interval is undefined with the estimate, or when no sample is defined."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if math.isnan(value) or samples.size == 0:
        return Interval(float(value), math.nan, math.nan)
    low, high = bootstrap.percentile_interval(samples, level)
    return Interval(float(value), float(low), float(high))


class PoolAnalysis(dict):
    """Result rows keyed by analysis name, and `notes`: one line each on what the rows cannot
    show (undefined correlations, repeated draws), for the command to print."""

    def __init__(self, rows: dict[str, list[dict]], notes: list[str]):
        super().__init__(rows)
        self.notes = notes


def paired_draw_groups(draws_a, draws_b, max_runs: int) -> list[np.ndarray]:
    """Per r = 1..R, which draws hold the same sets of runs in both curves' draws."""
    return [paired_groups(draw_groups(draws_a.runs, r), draw_groups(draws_b.runs, r))
            for r in range(1, max_runs + 1)]


def tracking(curve: np.ndarray, oracle: np.ndarray, groups: np.ndarray, rng, n_resamples: int,
             level: float) -> dict[str, Interval]:
    """Correlations over (draw, r) cells; the bootstrap resamples distinct draws (`groups`) whole."""
    weights = np.repeat(group_resample_counts(groups, rng, n_resamples), curve.shape[1], axis=1)
    x, y = curve.ravel(), oracle.ravel()
    return {name: percentile_interval(float(f(x, y)), f(x, y, weights), level) for name, f in COEFFICIENTS.items()}


def regret(curve: np.ndarray, oracle: np.ndarray, groups_by_r: list[np.ndarray], rng, n_resamples: int,
           level: float) -> list[Interval]:
    gap = oracle - curve
    return [percentile_interval(gap[:, r].mean(), grouped_bootstrap_means(gap[:, r], groups, rng, n_resamples), level)
            for r, groups in enumerate(groups_by_r)]


def repeat_notes(subject: str, groups_by_r: list[np.ndarray], counted_by: str, at_one: str) -> list[str]:
    """A note where draws repeat: `counted_by` (intervals, tests) counts identical draws once,
    and where a single set of runs remains, `at_one` says what that leaves."""
    counts = [n_groups(groups) for groups in groups_by_r]
    line = describe_repeats(counts, len(groups_by_r[0]))
    if line is None:
        return []
    single = f" ({at_one} where one set remains)" if 1 in counts else ""
    return [f"{subject}: {line}; {counted_by} count identical draws once{single}"]


def constant_notes(subject: str, where: str, series: dict[str, np.ndarray]) -> list[str]:
    """A note when a correlation is undefined because one of its series is constant."""
    constant = [f"{name} is {values.flat[0]:.4g} {where}" for name, values in series.items()
                if values.size and is_constant(values.ravel())]
    if not constant:
        return []
    return [f"{subject} is undefined: {' and '.join(constant)}, and a constant has no correlation"]


def language_scores(con, pool: Pool) -> tuple[dict, dict, list[str]]:
    """Per-language target test scores of run variants and averaged models, and the languages."""
    runs, averages = {}, {}
    for run_id, variant, language, value in con.execute(_RUN_LANGUAGES_SQL, [pool.task, pool.model]).fetchall():
        runs.setdefault((variant, run_id), {})[language] = value
    for recipe, key, language, value in con.execute(_AVERAGE_LANGUAGES_SQL, [pool.task, pool.model]).fetchall():
        averages.setdefault((recipe, key), {})[language] = value
    languages = sorted({lang for scores in runs.values() for lang in scores})
    return runs, averages, languages


_RUN_LANGUAGES_SQL = """
SELECT s.run_id, s.variant, s.dataset || '/' || s.language, s.value
FROM scores s JOIN task_table t ON t.task = s.task AND t.metric = s.metric
WHERE s.scored = 'run' AND s.role = 'target' AND s.split = 'test' AND s.task = ? AND s.model = ?
"""
_AVERAGE_LANGUAGES_SQL = """
SELECT a.recipe, a.member_key, s.dataset || '/' || s.language, s.value
FROM scores s JOIN averaged_models a USING (average_id) JOIN task_table t ON t.task = s.task AND t.metric = s.metric
WHERE s.scored = 'average' AND a.approach = 'all' AND s.role = 'target' AND s.split = 'test'
  AND s.task = ? AND s.model = ?
"""


def per_language_at(pool: Pool, draws, strategy: str, variant: str, r: int, tables) -> np.ndarray:
    """(n_draws, n_languages): each draw's per-language scores at r runs."""
    runs, averages, languages = tables
    cells = [row[r - 1] for row in curve_models(pool, draws, strategy, variant, r)]
    rows = [(runs if kind == "run" else averages).get((name, identity), {}) for kind, name, identity in cells]
    return np.array([[row.get(lang, np.nan) for lang in languages] for row in rows])


def source_ranking(pool: Pool, tables) -> list[dict]:
    """Per language and variant: Spearman between source validation and that language's test score
    (None where fewer than 3 runs have both, or either is constant across runs)."""
    runs, _, languages = tables
    rows = []
    for variant in ("last", "src-dev", "ca"):
        run_ids = sorted(r for r in pool.criteria.get(variant, {}) if (variant, r) in runs)
        if len(run_ids) < 3:
            continue
        source = np.array([pool.criteria[variant][r] for r in run_ids])
        for lang in languages:
            target = np.array([runs[(variant, r)].get(lang, np.nan) for r in run_ids])
            keep = ~np.isnan(target)
            rho = float(COEFFICIENTS["spearman"](source[keep], target[keep])) if keep.sum() > 2 else math.nan
            rows.append({"task": pool.task, "model": pool.model, "variant": variant, "language": lang,
                         "runs": int(keep.sum()), "spearman": None if math.isnan(rho) else rho})
    return rows


def _source_ranking_notes(pool: Pool, rows: list[dict]) -> list[str]:
    undefined = sum(row["spearman"] is None for row in rows)
    if not undefined:
        return []
    return [f"{pool.task}/{pool.model}: source_ranking is undefined for {undefined} of {len(rows)} (variant, "
            "language) rows: fewer than 3 runs scored, or source-language validation or the test score is the same "
            "for every run"]


MIN_LANGUAGES = 3  # two points always correlate perfectly


def _tracking_rows(head: dict, subject: str, curve, oracle, groups, rng, n_resamples, level):
    intervals = tracking(curve, oracle, groups, rng, n_resamples, level)
    rows = [{**head, "coefficient": name, "distinct_draws": n_groups(groups), **interval.fields()}
            for name, interval in intervals.items()]
    return rows, constant_notes(f"{subject}: tracking", "in every (draw, r) cell",
                                {"its score": curve, "the oracle's score": oracle})


def _language_rows(head: dict, subject: str, strategy_means, oracle_means, distinct: int, rng, n_resamples,
                   level):
    """Correlation across languages of per-language means, with a bootstrap over languages."""
    keep = ~(np.isnan(strategy_means) | np.isnan(oracle_means))
    x, y = strategy_means[keep], oracle_means[keep]
    if keep.sum() < MIN_LANGUAGES:
        intervals = dict.fromkeys(COEFFICIENTS, UNDEFINED)
        notes = [f"{subject}: languages is undefined: {int(keep.sum())} target language(s) scored, "
                 f"fewer than {MIN_LANGUAGES}"]
    else:
        picks = bootstrap.paired_indices(len(x), n_resamples, rng)
        intervals = {name: percentile_interval(float(f(x, y)), f(x[picks], y[picks]), level)
                     for name, f in COEFFICIENTS.items()}
        notes = constant_notes(f"{subject}: languages", "in every language",
                               {"its mean score": x, "the oracle's mean score": y})
    rows = [{**head, "coefficient": name, "languages": int(keep.sum()), "distinct_draws": distinct,
             **interval.fields()} for name, interval in intervals.items()]
    return rows, notes


def correlate_pool(con, pool: Pool, pairs, options: DrawOptions, max_runs: int,
                   resampling: ResamplingOptions, skip_missing: bool = False) -> PoolAnalysis:
    """Every analysis for one pool: lists of rows keyed by analysis name, and notes.

    `skip_missing`: pairs whose averaged models the store lacks are left out with a note
    (otherwise they are an error)."""
    rng, n_resamples, level = resampling.rng(), resampling.n_resamples, resampling.level
    max_runs = options.max_runs_for(con, pool, max_runs)
    pairs = list(dict.fromkeys(list(pairs) + [ORACLE]))
    if skip_missing:
        _, curves, skipped = available_curves(con, pool, pairs, options, max_runs)
    else:
        (_, curves), skipped = pair_curves(con, pool, pairs, options, max_runs), []
    oracle_draws, oracle = curves[ORACLE]
    tables = language_scores(con, pool)
    oracle_languages = per_language_at(pool, oracle_draws, *ORACLE, max_runs, tables).mean(axis=0)
    out = {"tracking": [], "regret": [], "languages": [], "source_ranking": source_ranking(pool, tables)}
    notes = [*options.automatic_notes(con, pool), *skip_notes(skipped),
             *_source_ranking_notes(pool, out["source_ranking"])]
    for (strategy, variant), (draws, curve) in curves.items():
        if (strategy, variant) == ORACLE:
            continue
        head = {"task": pool.task, "model": pool.model, "strategy": strategy, "variant": variant}
        subject = f"{pool.task}/{pool.model} {strategy} {variant}"
        whole_draws = paired_groups(draw_groups(draws.runs, max_runs, ordered=True),
                                    draw_groups(oracle_draws.runs, max_runs, ordered=True))
        rows, found = _tracking_rows(head, subject, curve, oracle, whole_draws, rng, n_resamples, level)
        out["tracking"] += rows
        groups_by_r = paired_draw_groups(draws, oracle_draws, max_runs)
        notes += found + repeat_notes(f"{subject} and the oracle", groups_by_r, "the intervals",
                                      "the regret interval is a point")
        for r, (groups, interval) in enumerate(zip(groups_by_r, regret(curve, oracle, groups_by_r, rng,
                                                                       n_resamples, level)), 1):
            out["regret"].append({**head, "runs": r, "distinct_draws": n_groups(groups), **interval.fields()})
        languages = per_language_at(pool, draws, strategy, variant, max_runs, tables).mean(axis=0)
        rows, found = _language_rows(head, subject, languages, oracle_languages, n_groups(groups_by_r[-1]), rng,
                                     n_resamples, level)
        out["languages"] += rows
        notes += found
    return PoolAnalysis(out, notes)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p_values[order]).clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate)."""
    order = np.argsort(p_values)
    m = len(p_values)
    scaled = p_values[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg}


def sign_flip_p_values(differences: np.ndarray, rng, n_resamples: int, groups=None) -> np.ndarray:
    """Two-sided paired randomization test of mean difference 0, per column of (n_draws, k).

    Identical draws (`groups`: a label 0..g-1 per draw; default: every draw distinct) flip their
    signs together, so the test's n is the number of distinct draws; with one, p = 1. Exact
    (every sign pattern) when there are at most max(`n_resamples`, 1024) patterns, as with the
    paper's 8-10 draws; otherwise Monte Carlo with the usual +1 correction.
    """
    n = differences.shape[0]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    g = n_groups(groups)
    observed = np.abs(differences.mean(axis=0))
    if 2 ** g <= max(n_resamples, 1024):
        patterns = ((np.arange(2 ** g)[:, None] >> np.arange(g)) & 1) * 2.0 - 1.0
        null = np.abs(patterns[:, groups] @ differences / n)
        return (null >= observed - 1e-12).mean(axis=0)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, g))[:, groups]
    null = np.abs(signs @ differences / n)
    return (1 + (null >= observed - 1e-12).sum(axis=0)) / (n_resamples + 1)


def _wins(difference: np.ndarray) -> np.ndarray:
    """1 where A beats B, 1/2 on a tie, 0 where B wins."""
    return (difference > 0) + 0.5 * (difference == 0)


def _by_r_resamples(difference, groups_by_r, rng, n_resamples: int, joint=None) -> list[np.ndarray]:
    """Per r, (n_resamples, 2) bootstrap values of the mean difference and of P(A > B).

    `joint`: the `JointCells` of the joint draws x examples bootstrap and the differences of their
    values; otherwise distinct draws are resampled (grouped_bootstrap_means).
    """
    if joint is not None:
        cells, difference_cells = joint
        means, wins = cells.mean(difference_cells), cells.mean(_wins(difference_cells))
        return [np.stack([means[:, r], wins[:, r]], axis=1) for r in range(means.shape[1])]
    return [grouped_bootstrap_means(np.stack([difference[:, r], _wins(difference[:, r])], axis=1), groups, rng,
                                    n_resamples) for r, groups in enumerate(groups_by_r)]


def compare_pool(con, pool: Pool, a, b, options: DrawOptions, max_runs: int, resampling: ResamplingOptions,
                 correction: str) -> PoolAnalysis:
    """Paired A - B per r (CI, P(A > B)), and per language at r = R with corrected p-values.

    The per-r intervals resample distinct draws, or with `resampling.resample == 'draws+examples'` draws and
    target test examples jointly (ofa_eval.evaluation.joint_bootstrap), the same resamples for A and B.
    """
    rng, n_resamples, level = resampling.rng(), resampling.n_resamples, resampling.level
    seed, resample = resampling.seed, resampling.resample
    max_runs = options.max_runs_for(con, pool, max_runs)
    _, curves = pair_curves(con, pool, [a, b], options, max_runs)
    (draws_a, score_a), (draws_b, score_b) = curves[a], curves[b]
    difference = score_a - score_b
    groups_by_r = paired_draw_groups(draws_a, draws_b, max_runs)
    joint = None
    if resample == "draws+examples":
        from ofa_eval.evaluation.joint_bootstrap import joint_cells

        cells = joint_cells(con, pool, curves, max_runs, n_resamples, seed)
        joint = cells, cells.values[a] - cells.values[b]
    base = {"task": pool.task, "model": pool.model, "a": " ".join(a), "b": " ".join(b)}
    by_r = []
    for r, (groups, boot) in enumerate(zip(groups_by_r, _by_r_resamples(difference, groups_by_r, rng, n_resamples,
                                                                        joint))):
        mean = percentile_interval(difference[:, r].mean(), boot[:, 0], level)
        p_better = percentile_interval(_wins(difference[:, r]).mean(), boot[:, 1], level)
        by_r.append({**base, "runs": r + 1, "distinct_draws": n_groups(groups), "difference": mean.value,
                     "low": mean.low, "high": mean.high, "p_a_better": p_better.value, "p_low": p_better.low,
                     "p_high": p_better.high})
    by_language = _language_tests(con, pool, (draws_a, a), (draws_b, b), groups_by_r[-1], base, rng, n_resamples,
                                  correction, max_runs)
    subject = f"{pool.task}/{pool.model} {base['a']} vs {base['b']}"
    at_one = "the interval is a point and p = 1" if joint is None else "the interval covers the test examples alone and p = 1"
    notes = repeat_notes(subject, groups_by_r, "the intervals and tests", at_one)
    return PoolAnalysis({"by_r": by_r, "by_language": by_language}, options.automatic_notes(con, pool) + notes)


def _language_tests(con, pool: Pool, side_a, side_b, groups, base: dict, rng, n_resamples: int, correction: str,
                    max_runs: int) -> list[dict]:
    """Per target language at r = R: the mean difference and its corrected sign-flip p-value."""
    tables = language_scores(con, pool)
    per_language = (per_language_at(pool, side_a[0], *side_a[1], max_runs, tables)
                    - per_language_at(pool, side_b[0], *side_b[1], max_runs, tables))
    keep = ~np.isnan(per_language).any(axis=0)
    languages = [lang for lang, k in zip(tables[2], keep) if k]
    p_values = sign_flip_p_values(per_language[:, keep], rng, n_resamples, groups)
    adjusted = CORRECTIONS[correction](p_values)
    return [{**base, "runs": max_runs, "distinct_draws": n_groups(groups), "language": lang,
             "difference": float(per_language[:, i].mean()), "p_value": float(p), f"p_{correction}": float(q)}
            for lang, i, p, q in zip(languages, np.flatnonzero(keep), p_values, adjusted)]


# --- per-language gains -----------------------------------------------------------------------------

GAIN_PAIRS = (("accumulative", "ca"), ("max-src-dev", "src-dev"))  # A over B, as the paper reports it

_TARGET_SETS_SQL = """
SELECT dataset || '/' || language, n_examples FROM eval_set_table
WHERE task = ? AND role = 'target' AND split = 'test'
"""


def language_gains(con, task: str, model: str, a=GAIN_PAIRS[0], b=GAIN_PAIRS[1], r: int | None = None,
                   draws: DrawOptions | None = None, resampling: ResamplingOptions | None = None,
                   examples: bool | None = None, max_runs: int | None = None) -> pl.DataFrame:
    """The gain of pair A over pair B (default: accumulative CA over Max SRC-DEV with SRC-DEV) in each
    target language at r runs (default: the largest r), with a paired bootstrap interval.

    `draws`: default automatic (recorded draws where the pool has no weights, else 10 fresh ones);
    `max_runs` makes the draws as `protocol -R` does (default as there). The interval
    resamples distinct draws; `examples` also resamples each language's test examples (True: required,
    False: never, None: where the store has per-example statistics for every model compared). One row
    per language: see `pool_language_gains`.
    """
    pool = load_pool(con, task, model)
    draws = draws or DrawOptions(automatic=True)
    max_runs = draws.max_runs_for(con, pool, max_runs)
    r = max_runs if r is None else r
    if not 1 <= r <= max_runs:
        raise OfaError(f"{pool.name}: r = {r} is outside 1..{max_runs} (the draws' runs; raise max_runs)")
    _, curves = pair_curves(con, pool, [a, b], draws, max_runs)
    return pool_language_gains(con, pool, (curves[a][0], a), (curves[b][0], b), r,
                               resampling or ResamplingOptions(n_resamples=2000), examples)


def pool_language_gains(con, pool: Pool, side_a, side_b, r: int, resampling: ResamplingOptions,
                        examples: bool | None = None) -> pl.DataFrame:
    """Per target language at r: A's and B's mean score over draws, the gain A - B with its percentile
    bootstrap interval (distinct draws resampled, `grouped_bootstrap_means`; with examples, one resample
    of each language's test examples shared by A and B first), and p_better, the share of draws in which
    A scores higher in that language (ties count half). `side_a`, `side_b`: (draws, (strategy, variant))."""
    (draws_a, a), (draws_b, b) = side_a, side_b
    tables = language_scores(con, pool)
    score_a, score_b = (per_language_at(pool, d, *pair, r, tables) for d, pair in (side_a, side_b))
    keep = ~np.isnan(score_a - score_b).any(axis=0)
    languages = [lang for lang, k in zip(tables[2], keep) if k]
    difference = (score_a - score_b)[:, keep]
    groups = paired_groups(draw_groups(draws_a.runs, r), draw_groups(draws_b.runs, r))
    rng = resampling.rng()
    stats = _example_stats(con, pool, [_cells_at(pool, d, pair, r) for d, pair in (side_a, side_b)], examples,
                           resampling.resample == "draws+examples")
    if stats is None:
        boot = grouped_bootstrap_means(difference, groups, rng, resampling.n_resamples)
    else:
        boot = _joint_language_gains(pool, stats, languages, groups, rng, resampling.n_resamples)
    sizes = dict(con.execute(_TARGET_SETS_SQL, [pool.task]).fetchall())
    rows = []
    for i, name in enumerate(languages):
        gain = percentile_interval(float(difference[:, i].mean()), boot[:, i], resampling.level)
        dataset, language = name.split("/", 1)
        rows.append({"task": pool.task, "model": pool.model, "a": " ".join(a), "b": " ".join(b), "runs": r,
                     "dataset": dataset, "language": language, "n_examples": sizes.get(name),
                     "a_score": float(score_a[:, keep][:, i].mean()), "b_score": float(score_b[:, keep][:, i].mean()),
                     "gain": gain.value, "ci_low": gain.low, "ci_high": gain.high,
                     "p_better": float(_wins(difference[:, i]).mean()), "draws": len(groups),
                     "distinct_draws": n_groups(groups), "resampled": "draws" if stats is None else "draws+examples"})
    return pl.DataFrame(rows, schema_overrides={"n_examples": pl.Int64})


def _cells_at(pool: Pool, draws, pair, r: int) -> list:
    """Each draw's model at r runs: ('run', variant, run_id) or ('average', recipe, member key)."""
    return [row[r - 1] for row in curve_models(pool, draws, *pair, r)]


def _example_stats(con, pool: Pool, cells: list[list], examples: bool | None, asked: bool):
    """(subject index per side and draw, per-language statistics) for the joint bootstrap, or None
    where examples are not resampled: `examples` False, or None (automatic) and some model compared
    has no per-example statistics."""
    from ofa_eval.evaluation.joint_bootstrap import load_language_stats

    if examples is False:
        return None
    subjects = list(dict.fromkeys(s for side in cells for s in side))
    try:
        languages = load_language_stats(con, pool, subjects)
    except OfaError:
        if examples or asked:
            raise
        return None
    index = {subject: i for i, subject in enumerate(subjects)}
    return [np.array([index[s] for s in side]) for side in cells], languages


def _joint_language_gains(pool: Pool, stats, languages: list[str], groups: np.ndarray, rng,
                          n_resamples: int) -> np.ndarray:
    """(n_resamples, n_languages) gains under joint resamples: per language, one resample of its test
    examples for every model (the metric recomputed from summed statistics), then distinct draws."""
    from ofa_eval.evaluation.joint_bootstrap import resampled_language_scores
    from ofa_eval.tasks.registry import get_task

    (index_a, index_b), language_stats = stats
    # languages sorted by name, as the protocol's joint bootstrap draws them: (subjects, B) each
    resampled = resampled_language_scores(get_task(pool.task).metric, language_stats, n_resamples, rng)
    counts = group_resample_counts(groups, rng, n_resamples)  # (B, n_draws)
    gains = np.stack([resampled[name][index_a] - resampled[name][index_b] for name in languages], axis=-1)
    return np.einsum("bd,dbl->bl", counts, gains) / counts.sum(axis=1, keepdims=True)
