"""The joint bootstrap over draws and test examples (`protocol --ci 95 --resample draws+examples`).

A protocol score is the mean over draws of the chosen model's score, itself the unweighted mean
over target languages of the task metric on that language's test set. Both levels are samples:
the draws of runs, and the test examples. Resample b:

1. resamples the test examples of every target language within that language (stratified), ONE
   resample per language shared by every subject (run variant or averaged model), every pair and
   every r, so differences between strategies stay paired;
2. recomputes each subject's per-language metric from its stored per-example sufficient
   statistics (`example_stats` view) as one matrix product per language
   (`bootstrap.resampled_sums`): F1 is a ratio of summed counts, never a mean of F1s;
3. resamples the draws (shared by every pair) and averages the chosen subjects' scores. Where
   draws repeat at r (the same set of runs), the distinct draws are resampled, each with all
   its copies (`draw_weights`), so that identical draws count as one piece of evidence.

Selection itself (source or target validation) is held fixed: validation sets are not
resampled, only what the reported number is measured on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ofa_eval.statistics import bootstrap
from ofa_eval.statistics.draw_diversity import draw_groups, group_resample_counts, n_groups, paired_groups
from ofa_eval.common.errors import OfaError
from ofa_eval.evaluation.pool import Pool
from ofa_eval.evaluation.strategies import Model, curve_models
from ofa_eval.tasks.registry import get_task


@dataclass(frozen=True)
class LanguageStats:
    """One target test set: statistic -> array (n_subjects, n_examples)."""

    name: str
    stats: dict[str, np.ndarray]

    @property
    def n_examples(self) -> int:
        return next(iter(self.stats.values())).shape[1]


def load_language_stats(con, pool: Pool, subjects: list[Model]) -> list[LanguageStats]:
    """Per target test set, the stored per-example statistics of `subjects`, in their order."""
    frame = _stored_stats(con, pool, subjects)
    index = {subject: i for i, subject in enumerate(subjects)}
    languages = []
    for (language,), rows in frame.sort("language").group_by(["language"], maintain_order=True):
        _check_same_examples(pool, language, rows)
        found = set(_frame_subjects(rows))
        missing = [s for s in subjects if s not in found]
        if missing:
            raise _missing_error(pool, missing[0], language)
        n_examples = rows["n_examples"][0]
        stats = {name: np.zeros((len(subjects), n_examples)) for name in rows["statistic"].unique().to_list()}
        for subject, name, values in zip(_frame_subjects(rows), rows["statistic"], rows["values"]):
            stats[name][index[subject]] = values.to_numpy()
        languages.append(LanguageStats(language, stats))
    if not languages:
        raise _missing_error(pool, subjects[0], "any target test set")
    return languages


def _stored_stats(con, pool: Pool, subjects: list[Model]) -> pl.DataFrame:
    """The statistics of `subjects` only (a lab's pool holds far more than one protocol call needs),
    filtered in SQL through a registered table of the wanted subjects."""
    import pyarrow as pa

    wanted = pa.table({"kind": [kind for kind, _, _ in subjects], "name": [name for _, name, _ in subjects],
                       "id": [str(id_) for _, _, id_ in subjects]})
    con.register("wanted_subjects", wanted)
    try:
        table = con.sql(_STATS_SQL, params=[pool.task, pool.model, pool.task, pool.model]).to_arrow_table()
    finally:
        con.unregister("wanted_subjects")
    return pl.from_arrow(table)


_STATS_SQL = """
SELECT 'run' AS kind, x.variant AS name, CAST(x.run_id AS VARCHAR) AS id,
       e.dataset || '/' || e.language AS language, x.statistic, len(x."values") AS n_examples,
       x.examples_sha256, x."values"
FROM example_stat_table x JOIN eval_set_table e USING (eval_set_id) JOIN run_table r USING (run_id)
JOIN wanted_subjects w ON w.kind = 'run' AND w.name = x.variant AND w.id = CAST(x.run_id AS VARCHAR)
WHERE e.task = ? AND r.model = ?
UNION ALL
SELECT 'average', a.recipe, a.member_key, e.dataset || '/' || e.language, x.statistic, len(x."values"),
       x.examples_sha256, x."values"
FROM example_stat_table x JOIN eval_set_table e USING (eval_set_id) JOIN average_table a USING (average_id)
JOIN wanted_subjects w ON w.kind = 'average' AND w.name = a.recipe AND w.id = a.member_key
WHERE a.approach = 'all' AND e.task = ? AND a.model = ?
"""


def _frame_subjects(frame: pl.DataFrame) -> list[Model]:
    return [(kind, name, int(id_) if kind == "run" else id_)
            for kind, name, id_ in zip(frame["kind"], frame["name"], frame["id"])]


def _check_same_examples(pool: Pool, language: str, rows: pl.DataFrame) -> None:
    if rows["examples_sha256"].n_unique() > 1:
        raise OfaError(f"{pool.task}/{pool.model}: target test set {language} was scored on different example "
                       "sets by different runs, so examples cannot be resampled jointly")


def _missing_error(pool: Pool, subject: Model, language: str) -> OfaError:
    kind, name, id_ = subject
    what = (f"run {pool.external_id.get(id_, id_)} ({name})" if kind == "run"
            else f"the {name} average {str(id_)[:12]}")
    return OfaError(f"{pool.task}/{pool.model}: no per-example statistics for {what} on {language}: "
                    "--resample draws+examples needs them (released results have none, nor do runs "
                    "ingested into a schema-1 store: re-ingest those into a new store)")


def resampled_language_scores(metric, languages: list[LanguageStats], n_resamples: int, rng) -> dict:
    """{language: (n_subjects, n_resamples)}: each subject's metric on one resample of that
    language's test examples per row, recomputed from summed statistics; languages in order,
    one resample of each shared by every subject."""
    return {language.name: metric.from_sums(bootstrap.drawn_sums(language.stats, n_resamples, rng),
                                            language.n_examples)[metric.name]
            for language in languages}


def subject_scores(metric, languages: list[LanguageStats], n_resamples: int, rng) -> np.ndarray:
    """(n_subjects, n_resamples): each subject's mean over languages under each example resample."""
    return sum(resampled_language_scores(metric, languages, n_resamples, rng).values()) / len(languages)


@dataclass(frozen=True)
class JointCells:
    """Every curve cell under each joint resample, and how often each draw enters it.

    values: {pair: (n_resamples, n_draws, max_runs)}, the cell's score under resample b's test
    examples; weights: (n_resamples, n_draws, max_runs), the times draw d enters resample b at r.
    """

    values: dict
    weights: np.ndarray

    def mean(self, values: np.ndarray) -> np.ndarray:
        """(n_resamples, max_runs): the mean over resampled draws of `values` (shaped as a pair's)."""
        return (values * self.weights).sum(axis=1) / self.weights.sum(axis=1)


def draw_weights(draws_runs: list[list[list[int]]], max_runs: int, n_resamples: int, rng) -> np.ndarray:
    """(n_resamples, n_draws, max_runs): how often each draw enters each resample at r.

    One resample of the draws serves every r; at an r where some draws hold the same runs in
    every pair's draws (`draws_runs`: one list of draws per pair), distinct draws are resampled
    instead, each with all its copies.
    """
    n_draws = len(draws_runs[0])
    plain = bootstrap.resample_counts(bootstrap.paired_indices(n_draws, n_resamples, rng), n_draws)
    weights = np.empty((n_resamples, n_draws, max_runs))
    for r in range(max_runs):
        groups = paired_groups(*(draw_groups(runs, r + 1) for runs in draws_runs))
        weights[:, :, r] = plain if n_groups(groups) == n_draws else group_resample_counts(groups, rng, n_resamples)
    return weights


def joint_cells(con, pool: Pool, curves: dict, max_runs: int, n_resamples: int, seed: int) -> JointCells:
    """Every curve cell under each joint resample (`JointCells`).

    Resample b of every pair uses the same example resamples and the same resampled draws, so
    differences between pairs are paired cell by cell.
    """
    cells = {pair: curve_models(pool, draws, *pair, max_runs) for pair, (draws, _) in curves.items()}
    subjects = list(dict.fromkeys(s for rows in cells.values() for row in rows for s in row))
    if len({len(rows) for rows in cells.values()}) > 1:
        raise OfaError(f"{pool.task}/{pool.model}: the pairs have different numbers of draws; "
                       "resample them in separate calls")
    languages = load_language_stats(con, pool, subjects)
    rng = np.random.default_rng(seed)
    scores = subject_scores(get_task(pool.task).metric, languages, n_resamples, rng).T  # (n_resamples, n_subjects)
    weights = draw_weights([draws.runs for draws, _ in curves.values()], max_runs, n_resamples, rng)
    index = {subject: i for i, subject in enumerate(subjects)}
    values = {pair: scores[:, np.array([[index[s] for s in row] for row in rows])] for pair, rows in cells.items()}
    return JointCells(values, weights)


def joint_intervals(con, pool: Pool, curves: dict, max_runs: int, interval) -> dict:
    """{pair: (low, high)}, each an array over r, of the joint draws x examples bootstrap."""
    cells = joint_cells(con, pool, curves, max_runs, interval.n_resamples, interval.seed)
    return {pair: bootstrap.percentile_interval(cells.mean(values).T, interval.level)
            for pair, values in cells.values.items()}
