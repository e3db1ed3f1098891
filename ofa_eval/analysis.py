"""How closely each strategy tracks the oracle (Max TRG-DEV), and how well English ranks runs.

- tracking: correlation of a strategy's score with the oracle's over every (draw, r) cell, with
  a bootstrap over draws (cells of one draw are resampled together);
- regret: oracle minus strategy, per r, with a bootstrap interval over draws;
- languages: at r = R, correlation across target languages of the strategy's and the oracle's
  per-language scores (mean over draws), with a bootstrap over languages;
- source ranking: per target language, the rank correlation between the runs' source-language
  validation score and their test score in that language.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ofa_eval import bootstrap
from ofa_eval.correlation import COEFFICIENTS
from ofa_eval.protocol import DrawOptions, Pool, curve_models, pair_curves, pool_max_runs

ORACLE = ("max-trg-dev", "trg-dev")


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def percentile_interval(value: float, samples: np.ndarray, level: float) -> Interval:
    """The estimate with the percentile interval of its bootstrap samples (undefined ones dropped)."""
    samples = np.asarray(samples, dtype=float)
    low, high = bootstrap.percentile_interval(samples[~np.isnan(samples)], level)
    return Interval(float(value), float(low), float(high))


def tracking(curve: np.ndarray, oracle: np.ndarray, rng, n_resamples: int, level: float) -> dict[str, Interval]:
    """Correlations over (draw, r) cells, resampling whole draws."""
    n_draws = curve.shape[0]
    picks = bootstrap.paired_indices(n_draws, n_resamples, rng)
    x_boot = curve[picks].reshape(n_resamples, -1)
    y_boot = oracle[picks].reshape(n_resamples, -1)
    return {name: percentile_interval(f(curve.ravel(), oracle.ravel()), f(x_boot, y_boot), level)
            for name, f in COEFFICIENTS.items()}


def regret(curve: np.ndarray, oracle: np.ndarray, rng, n_resamples: int, level: float) -> list[Interval]:
    gap = oracle - curve
    picks = bootstrap.paired_indices(gap.shape[0], n_resamples, rng)
    boot = gap[picks].mean(axis=1)
    return [percentile_interval(gap[:, r].mean(), boot[:, r], level) for r in range(gap.shape[1])]


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
    """Per language and variant: Spearman between source validation and that language's test score."""
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
            rho = COEFFICIENTS["spearman"](source[keep], target[keep]) if keep.sum() > 2 else np.nan
            rows.append({"task": pool.task, "model": pool.model, "variant": variant, "language": lang,
                         "runs": int(keep.sum()), "spearman": float(rho)})
    return rows


def correlate_pool(con, pool: Pool, pairs, options: DrawOptions, max_runs: int, n_resamples: int,
                   level: float, seed: int) -> dict[str, list[dict]]:
    """Every analysis for one pool, as lists of rows keyed by analysis name."""
    rng = np.random.default_rng(seed)
    max_runs = pool_max_runs(pool, max_runs)
    pairs = list(dict.fromkeys(list(pairs) + [ORACLE]))
    _, curves = pair_curves(con, pool, pairs, options, max_runs)
    oracle_draws, oracle = curves[ORACLE]
    tables = language_scores(con, pool)
    oracle_languages = per_language_at(pool, oracle_draws, *ORACLE, max_runs, tables).mean(axis=0)
    out = {"tracking": [], "regret": [], "languages": [], "source_ranking": source_ranking(pool, tables)}
    base = {"task": pool.task, "model": pool.model}
    for (strategy, variant), (draws, curve) in curves.items():
        if (strategy, variant) == ORACLE:
            continue
        pair = {**base, "strategy": strategy, "variant": variant}
        for name, interval in tracking(curve, oracle, rng, n_resamples, level).items():
            out["tracking"].append({**pair, "coefficient": name, **vars(interval)})
        for r, interval in enumerate(regret(curve, oracle, rng, n_resamples, level), 1):
            out["regret"].append({**pair, "runs": r, **vars(interval)})
        languages = per_language_at(pool, draws, strategy, variant, max_runs, tables).mean(axis=0)
        keep = ~(np.isnan(languages) | np.isnan(oracle_languages))
        x, y = languages[keep], oracle_languages[keep]
        picks = bootstrap.paired_indices(len(x), n_resamples, rng)
        for name, f in COEFFICIENTS.items():
            interval = percentile_interval(f(x, y), f(x[picks], y[picks]), level)
            out["languages"].append({**pair, "coefficient": name, "languages": int(keep.sum()), **vars(interval)})
    return out


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


def sign_flip_p_values(differences: np.ndarray, rng, n_resamples: int) -> np.ndarray:
    """Two-sided paired randomization test of mean difference 0, per column of (n_draws, k).

    Exact (every sign pattern) when there are at most `n_resamples` patterns, as with the
    paper's 8-10 draws; otherwise Monte Carlo with the usual +1 correction.
    """
    n = differences.shape[0]
    observed = np.abs(differences.mean(axis=0))
    if 2 ** n <= max(n_resamples, 1024):
        patterns = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
        null = np.abs(patterns @ differences / n)
        return (null >= observed - 1e-12).mean(axis=0)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, n, 1))
    null = np.abs((signs * differences[None]).mean(axis=1))
    return (1 + (null >= observed - 1e-12).sum(axis=0)) / (n_resamples + 1)


def _wins(difference: np.ndarray) -> np.ndarray:
    """1 where A beats B, 1/2 on a tie, 0 where B wins."""
    return (difference > 0) + 0.5 * (difference == 0)


def compare_pool(con, pool: Pool, a, b, options: DrawOptions, max_runs: int, n_resamples: int, level: float,
                 seed: int, correction: str, resample: str = "draws") -> dict[str, list[dict]]:
    """Paired A - B per r (CI, P(A > B)), and per language at r = R with corrected p-values.

    The per-r intervals resample draws, or with `resample='draws+examples'` draws and target
    test examples jointly (ofa_eval.example_bootstrap), the same resamples for A and B.
    """
    rng = np.random.default_rng(seed)
    max_runs = pool_max_runs(pool, max_runs)
    _, curves = pair_curves(con, pool, [a, b], options, max_runs)
    (draws_a, score_a), (draws_b, score_b) = curves[a], curves[b]
    difference = score_a - score_b
    if resample == "draws+examples":
        from ofa_eval.example_bootstrap import joint_cells

        cells = joint_cells(con, pool, curves, max_runs, n_resamples, seed)
        resampled = cells[a] - cells[b]
    else:
        resampled = difference[bootstrap.paired_indices(difference.shape[0], n_resamples, rng)]
    base = {"task": pool.task, "model": pool.model, "a": " ".join(a), "b": " ".join(b)}
    by_r = []
    boot_means, boot_wins = resampled.mean(axis=1), _wins(resampled).mean(axis=1)  # (n_resamples, max_runs)
    for r in range(max_runs):
        mean = percentile_interval(difference[:, r].mean(), boot_means[:, r], level)
        p_better = percentile_interval(_wins(difference[:, r]).mean(), boot_wins[:, r], level)
        by_r.append({**base, "runs": r + 1, "difference": mean.value, "low": mean.low, "high": mean.high,
                     "p_a_better": p_better.value, "p_low": p_better.low, "p_high": p_better.high})
    tables = language_scores(con, pool)
    per_language = (per_language_at(pool, draws_a, *a, max_runs, tables)
                    - per_language_at(pool, draws_b, *b, max_runs, tables))
    keep = ~np.isnan(per_language).any(axis=0)
    languages = [lang for lang, k in zip(tables[2], keep) if k]
    p_values = sign_flip_p_values(per_language[:, keep], rng, n_resamples)
    adjusted = CORRECTIONS[correction](p_values)
    by_language = [{**base, "runs": max_runs, "language": lang, "difference": float(per_language[:, i].mean()),
                    "p_value": float(p), f"p_{correction}": float(q)}
                   for lang, i, p, q in zip(languages, np.flatnonzero(keep), p_values, adjusted)]
    return {"by_r": by_r, "by_language": by_language}
