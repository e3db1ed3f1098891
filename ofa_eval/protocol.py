"""The resampling protocol of the paper: draws of runs, selection and averaging strategies.

A *pool* is everything the store knows about one (task, model): its runs with their
hyperparameter configuration, each run variant's selection criteria and target score, and the
scores of averaged models keyed by their member sets. A *draw* is an ordered list of runs with
distinct (learning rate, batch size) configurations; its first r runs are the draw at r.

Strategies:
- max-src-dev: among the draw's first r runs, the run whose variant has the highest
  source-language validation score (the earlier run wins a tie); its target score.
- max-trg-dev: the same, ranked by the run's target-language validation criterion (oracle).
- accumulative: the averaged model of the first r runs' variant.
- soup: the average of the top-k snapshots (by source validation) of the first r runs.
- greedy-soup: the greedy soup of Wortsman et al. (2022) over the first r runs' variant models:
  in order of source validation, a run joins the soup when the average with it scores at least
  as well on source validation as the soup without it.

Every score is the unweighted mean over the task's target-language test sets, in percent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ofa_eval.errors import OfaError
from ofa_eval.keys import member_key

SELECTION_VARIANTS = ("last", "src-dev", "ca")


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # 'select' or 'average'
    variants: tuple[str, ...]
    in_paper: bool = True  # computed when no strategy is named (--all: the paper's Tables 1 and 2)


STRATEGIES = {
    "max-src-dev": Strategy("max-src-dev", "select", SELECTION_VARIANTS),
    "max-trg-dev": Strategy("max-trg-dev", "select", ("trg-dev",)),
    "accumulative": Strategy("accumulative", "average", SELECTION_VARIANTS),
    "soup": Strategy("soup", "average", ("top{k}",)),
    "greedy-soup": Strategy("greedy-soup", "average", SELECTION_VARIANTS, in_paper=False),
}
ALL_VARIANTS = ("last", "src-dev", "ca", "trg-dev", "top{k}")


def strategy_pairs(strategies, variants, soup_k: int) -> list[tuple[str, str]]:
    """The (strategy, variant) pairs to compute; the paper's pairs when no strategy is named."""
    names = list(strategies) or [name for name, strategy in STRATEGIES.items() if strategy.in_paper]
    for name in names:
        if name not in STRATEGIES:
            raise OfaError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    soup_variant = f"top{soup_k}"
    wanted = [soup_variant if v in ("top{k}", soup_variant) else v for v in variants]
    for variant in wanted:
        if variant not in ALL_VARIANTS and variant != soup_variant:
            raise OfaError(f"unknown variant {variant!r} (known: last, src-dev, ca, trg-dev)")
    pairs = []
    for name in names:
        for variant in STRATEGIES[name].variants:
            variant = variant.replace("{k}", str(soup_k))
            if not wanted or variant in wanted:
                pairs.append((name, variant))
    if not pairs:
        raise OfaError(f"no strategy among {', '.join(names)} takes variant(s) {', '.join(wanted)}")
    unused = [v for v in wanted if not any(v == p[1] for p in pairs)]
    if unused:
        raise OfaError(f"variant {unused[0]!r} does not apply to strategy {', '.join(names)}")
    return pairs


@dataclass
class Pool:
    """What the store knows about one (task, model)."""

    task: str
    model: str
    external_id: dict[int, str]
    config: dict[int, tuple[float, int]]
    target_test: dict[str, dict[int, float]]
    criteria: dict[str, dict[int, float]]  # variant -> run -> selection criterion
    averages: dict[tuple[str, str], float] = field(default_factory=dict)  # (recipe, member key) -> score
    average_source_dev: dict[tuple[str, str], float] = field(default_factory=dict)  # the same, source validation
    released: set[int] = field(default_factory=set)  # runs imported from the release
    variant_weights: dict[str, dict[int, str]] = field(default_factory=dict)  # variant -> run -> sha256
    snapshot_ranking: dict[int, list[tuple[float, int, str]]] = field(default_factory=dict)  # run -> (src dev, index, sha)
    weight_paths: dict[str, str] = field(default_factory=dict)  # sha256 -> a file with that content

    @property
    def configurations(self) -> list[tuple[float, int]]:
        return sorted(set(self.config.values()))

    def member_identities(self, recipe: str, run_ids: list[int]) -> list[str] | None:
        """What an averaged model of these runs is made of, as strings for its member key.

        Released runs are known by their run ids (the release averaged whole recipes of runs);
        ingested runs by the content hashes of the weight files that get averaged. None when
        some weights were not kept.
        """
        if all(run_id in self.released for run_id in run_ids):
            return [self.external_id[run_id] for run_id in run_ids]
        if recipe.startswith("soup-top"):
            return self._soup_members(run_ids, int(recipe.removeprefix("soup-top")))
        hashes = self.variant_weights.get(recipe, {})
        return [hashes[r] for r in run_ids] if all(r in hashes for r in run_ids) else None

    def _soup_members(self, run_ids: list[int], k: int) -> list[str] | None:
        """The k snapshots with the best source validation among the runs' snapshots."""
        candidates = [(-score, position, index, sha)
                      for position, run_id in enumerate(run_ids)
                      for score, index, sha in self.snapshot_ranking.get(run_id, [])]
        chosen = sorted(candidates)[:k]
        if len(chosen) < min(k, sum(len(self.snapshot_ranking.get(r, [])) for r in run_ids)) or not chosen:
            return None
        if any(sha is None for *_, sha in chosen):
            return None
        return [sha for *_, sha in chosen]


def load_pool(con, task: str, model: str) -> Pool:
    rows = con.execute(
        "SELECT run_id, external_id, learning_rate, batch_size FROM run_table WHERE task=? AND model=? ORDER BY run_id",
        [task, model]).fetchall()
    if not rows:
        raise OfaError(f"no runs of task {task!r} with model {model!r} in the store")
    pool = Pool(task, model, {r[0]: r[1] for r in rows}, {r[0]: (r[2], r[3]) for r in rows}, {}, {})
    for run_id, variant, value in con.execute(
            "SELECT run_id, variant, target_test FROM run_variants WHERE task=? AND model=?", [task, model]).fetchall():
        pool.target_test.setdefault(variant, {})[run_id] = value
    for run_id, variant, value in con.execute(_SOURCE_DEV_SQL, [task, model]).fetchall():
        pool.criteria.setdefault(variant, {})[run_id] = value
    for run_id, value in con.execute(
            "SELECT run_id, value FROM selection_scores WHERE task=? AND model=? AND criterion='target-dev'",
            [task, model]).fetchall():
        pool.criteria.setdefault("trg-dev", {})[run_id] = value
    for recipe, key, value in con.execute(
            "SELECT recipe, member_key, target_test FROM average_scores WHERE task=? AND model=? AND approach='all'",
            [task, model]).fetchall():
        pool.averages[(recipe, key)] = value
    for recipe, key, value in con.execute(_AVERAGE_SOURCE_DEV_SQL, [pool.task, pool.model]).fetchall():
        pool.average_source_dev[(recipe, key)] = value
    _load_members(con, pool)
    return pool


def _load_members(con, pool: Pool) -> None:
    """Which runs are released, and the weight hashes of ingested runs' variants and snapshots."""
    args = [pool.task, pool.model]
    pool.released = {r for (r,) in con.execute(
        "SELECT run_id FROM run_table WHERE task=? AND model=? AND origin='ofa-xlt'", args).fetchall()}
    if len(pool.released) == len(pool.external_id):
        return
    for run_id, variant, sha, path in con.execute(
            "SELECT run_id, variant, weights_sha256, weights_path FROM run_weights WHERE task=? AND model=?",
            args).fetchall():
        pool.variant_weights.setdefault(variant, {})[run_id] = sha
        pool.weight_paths[sha] = path
    for run_id, score, index, sha, path in con.execute(_SNAPSHOT_SOURCE_DEV_SQL, args).fetchall():
        pool.snapshot_ranking.setdefault(run_id, []).append((score, index, sha))
        if sha:
            pool.weight_paths[sha] = path


_SOURCE_DEV_SQL = """
SELECT sc.run_id, sc.variant, sc.value
FROM score_table sc
JOIN run_table r USING (run_id)
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE r.task = ? AND r.model = ? AND e.role = 'source' AND e.split = 'validation'
"""


_AVERAGE_SOURCE_DEV_SQL = """
SELECT a.recipe, a.member_key, avg(sc.value)
FROM score_table sc
JOIN average_table a USING (average_id)
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE a.task = ? AND a.model = ? AND a.approach = 'all' AND e.role = 'source' AND e.split = 'validation'
GROUP BY ALL
"""


_SNAPSHOT_SOURCE_DEV_SQL = """
SELECT sn.run_id, sc.value, sn.snapshot_index, sn.weights_sha256, sn.weights_path
FROM score_table sc
JOIN snapshot_table sn USING (snapshot_id)
JOIN run_table r ON r.run_id = sn.run_id
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE r.task = ? AND r.model = ? AND e.role = 'source' AND e.split = 'validation'
ORDER BY sn.run_id, sn.snapshot_index
"""


@dataclass(frozen=True)
class DrawSet:
    """Ordered run lists, one per draw, with labels; `description` goes into the settings."""

    labels: list[str]
    runs: list[list[int]]
    description: dict


def sample_draws(pool: Pool, n_draws: int, max_runs: int, seed: int) -> DrawSet:
    """Fresh draws as in the paper: R distinct configurations in random order, one seed each."""
    configurations = pool.configurations
    if max_runs > len(configurations):
        raise OfaError(
            f"{pool.task}/{pool.model}: --max-runs {max_runs} exceeds the {len(configurations)} "
            "distinct (learning rate, batch size) configurations")
    by_config: dict[tuple, list[int]] = {}
    for run_id, config in sorted(pool.config.items()):
        by_config.setdefault(config, []).append(run_id)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        order = rng.permutation(len(configurations))[:max_runs]
        draws.append([_pick(rng, by_config[configurations[i]]) for i in order])
    return DrawSet([str(i) for i in range(n_draws)], draws,
                   {"draws": "sampled", "n_draws": n_draws, "seed": seed})


def _pick(rng: np.random.Generator, run_ids: list[int]) -> int:
    return run_ids[int(rng.integers(len(run_ids)))]


def recorded_draws(con, pool: Pool, max_runs: int, exclude: tuple[str, ...], recipe: str | None) -> DrawSet:
    """The store's recorded draws; a recipe's own recorded order replaces the common one."""
    rows = con.execute(
        "SELECT draw, recipe, run_id FROM draw_table WHERE task=? AND model=? AND recipe IN ('*', ?) "
        "ORDER BY draw, recipe, position", [pool.task, pool.model, recipe or "*"]).fetchall()
    if not rows:
        raise IncompletePool(f"{pool.task}/{pool.model}: no recorded draws in the store (sample with --draws N --seed S)")
    draws: dict[str, dict[str, list[int]]] = {}
    for label, draw_recipe, run_id in rows:
        draws.setdefault(label, {}).setdefault(draw_recipe, []).append(run_id)
    chosen = {label: orders.get(recipe, orders.get("*")) for label, orders in draws.items()}
    chosen = {label: runs for label, runs in chosen.items() if runs}
    unknown = [label for label in exclude if label not in chosen]
    if unknown:
        raise OfaError(f"{pool.task}/{pool.model}: no recorded draw {unknown[0]!r} (recorded: {', '.join(sorted(chosen, key=_label_order))})")
    kept = {label: runs for label, runs in chosen.items() if label not in exclude}
    if not kept:
        raise OfaError(f"{pool.task}/{pool.model}: every recorded draw is excluded")
    short = [label for label, runs in kept.items() if len(runs) < max_runs]
    if short:
        raise OfaError(f"{pool.task}/{pool.model}: --max-runs {max_runs} exceeds recorded draw {short[0]!r} "
                       f"({len(kept[short[0]])} runs)")
    labels = sorted(kept, key=_label_order)
    return DrawSet(labels, [kept[label][:max_runs] for label in labels],
                   {"draws": "recorded", "excluded": sorted(exclude)})


def _label_order(label: str):
    return (0, int(label), label) if label.isdigit() else (1, 0, label)


class IncompletePool(OfaError):
    """A pool lacks what the protocol needs: recorded draws or averaged models."""


@dataclass
class MissingAverages(Exception):
    """Averaged models a strategy needs but the store has no scores for."""

    task: str
    model: str
    member_sets: list[tuple[str, list[str]]]  # (recipe, external ids in draw order)


def averaging_recipe(strategy: str, variant: str) -> str | None:
    """The averaged models a pair needs ('last', 'soup-top5', ...), None for selection.

    Greedy soups are averages of run variants, like accumulative averages: they share the
    variant's recipe, so a member set is made and scored once for both.
    """
    if STRATEGIES[strategy].kind == "select":
        return None
    return f"soup-{variant}" if strategy == "soup" else variant


# What one (draw, r) cell is scored on: ('run', variant, run_id) or ('average', recipe, member key).
Model = tuple[str, str, object]


def curve_models(pool: Pool, draws: DrawSet, strategy: str, variant: str, max_runs: int) -> list[list[Model]]:
    """The model each cell of a pair's (n_draws, max_runs) curve is scored on.

    Raises MissingAverages listing the averaged models (member sets) whose scores the store
    lacks; for greedy soups those are the next candidates each greedy path needs.
    """
    recipe = averaging_recipe(strategy, variant)
    if recipe is None:
        return [[("run", variant, int(run_id)) for run_id in row]
                for row in selected_runs(pool, draws, variant, max_runs)]
    if strategy == "greedy-soup":
        return _greedy_models(pool, draws, variant, max_runs)
    return [[("average", recipe, key) for key in keys] for keys in averaged_model_keys(pool, draws, recipe, max_runs)]


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


def selected_runs(pool: Pool, draws: DrawSet, variant: str, max_runs: int) -> np.ndarray:
    """Run ids of shape (n_draws, max_runs): the run selected among each draw's first r runs."""
    criterion, target = pool.criteria.get(variant, {}), pool.target_test.get(variant, {})
    out = np.empty((len(draws.runs), max_runs), dtype=np.int64)
    for d, runs in enumerate(draws.runs):
        missing = [pool.external_id[r] for r in runs if r not in criterion or r not in target]
        if missing:
            raise OfaError(f"{pool.task}/{pool.model}: run {missing[0]} has no {variant!r} "
                           "selection criterion or target test score in the store")
        best = runs[0]
        for r, run_id in enumerate(runs[:max_runs]):
            if criterion[run_id] > criterion[best]:
                best = run_id
            out[d, r] = best
    return out


def averaged_model_keys(pool: Pool, draws: DrawSet, recipe: str, max_runs: int) -> list[list[str | None]]:
    """The member key of each draw's averaged model at r = 1..R (None where weights are missing)."""
    keys = []
    for runs in draws.runs:
        identities = [pool.member_identities(recipe, runs[:r]) for r in range(1, max_runs + 1)]
        keys.append([None if i is None else member_key(i) for i in identities])
    return keys


@dataclass(frozen=True)
class GreedyPath:
    """A greedy soup walked as far as the store allows: its members so far, and the candidate
    member set whose source validation score is needed next (None when the soup is complete)."""

    members: list[int]
    needs: list[int] | None


def greedy_soup(pool: Pool, variant: str, run_ids: list[int]) -> GreedyPath:
    """Wortsman et al.'s greedy soup of the runs' `variant` models, ranked by source validation.

    The best run starts the soup; each next run (in decreasing source validation, the earlier
    run first on a tie) joins when the average with it scores at least the soup's current
    source validation score.
    """
    criterion = pool.criteria.get(variant, {})
    missing = [pool.external_id[r] for r in run_ids if r not in criterion]
    if missing:
        raise OfaError(f"{pool.task}/{pool.model}: run {missing[0]} has no {variant!r} source validation score")
    ranked = sorted(run_ids, key=lambda run_id: -criterion[run_id])
    soup, best = [ranked[0]], criterion[ranked[0]]
    for run_id in ranked[1:]:
        candidate = soup + [run_id]
        identities = pool.member_identities(variant, candidate)
        score = None if identities is None else pool.average_source_dev.get((variant, member_key(identities)))
        if score is None:
            return GreedyPath(soup, candidate)
        if score >= best:
            soup, best = candidate, score
    return GreedyPath(soup, None)


def _greedy_models(pool: Pool, draws: DrawSet, variant: str, max_runs: int) -> list[list[Model]]:
    models, missing = [], []
    for runs in draws.runs:
        row = []
        for r in range(1, max_runs + 1):
            path = greedy_soup(pool, variant, runs[:r])
            if path.needs is not None:
                missing.append((variant, [pool.external_id[run_id] for run_id in path.needs]))
            elif len(path.members) == 1:
                row.append(("run", variant, path.members[0]))  # a one-model soup is that run's model
            else:
                row.append(("average", variant, member_key(pool.member_identities(variant, path.members))))
        models.append(row)
    if missing:
        raise MissingAverages(pool.task, pool.model, missing)
    return models


def summarize(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (n-1) over draws, per r."""
    mean = scores.mean(axis=0)
    std = scores.std(axis=0, ddof=1) if scores.shape[0] > 1 else np.full(scores.shape[1], np.nan)
    return mean, std


RESAMPLING_LEVELS = ("draws", "draws+examples")
DEFAULT_MAX_RUNS = 10  # the paper's r = 1..10


def pool_max_runs(pool: Pool, max_runs: int | None) -> int:
    """The largest r: as asked, else 10 or the pool's number of configurations if smaller."""
    return max_runs if max_runs is not None else min(DEFAULT_MAX_RUNS, len(pool.configurations))


@dataclass(frozen=True)
class IntervalOptions:
    """A bootstrap confidence interval of the mean over draws (protocol --ci).

    `resample`: 'draws' resamples whole draws; 'draws+examples' also resamples the target test
    examples through their stored per-example statistics (`ofa_eval.example_bootstrap`).
    """

    level: float = 0.95
    n_resamples: int = 10_000
    method: str = "percentile"
    seed: int = 0
    resample: str = "draws"

    def __post_init__(self):
        if self.resample not in RESAMPLING_LEVELS:
            raise OfaError(f"unknown resampling {self.resample!r} (known: {', '.join(RESAMPLING_LEVELS)})")
        if self.resample == "draws+examples" and self.method != "percentile":
            raise OfaError("--resample draws+examples gives percentile intervals only (BCa's jackknife "
                           "has no two-level analogue here)")


def protocol_rows(pool: Pool, curves: dict, max_runs: int, bounds: dict | None = None) -> list[dict]:
    """Long rows with the protocol CSV's columns, for every pair and r (plus ci_low/ci_high
    where `bounds` maps the pair to its interval endpoints over r)."""
    rows = []
    for (strategy, variant), (draws, scores) in curves.items():
        mean, std = summarize(scores)
        for r in range(max_runs):
            row = {"task": pool.task, "model": pool.model, "strategy": strategy, "variant": variant,
                   "runs": r + 1, "mean": float(mean[r]),
                   "std": None if math.isnan(std[r]) else float(std[r]), "draws": len(draws.runs)}
            if bounds is not None:
                low, high = bounds[(strategy, variant)]
                row.update(ci_low=float(low[r]), ci_high=float(high[r]))
            rows.append(row)
    return rows


def interval_bounds(con, pool: Pool, curves: dict, max_runs: int, interval: IntervalOptions) -> dict:
    """{pair: (low, high)} over r: the bootstrap interval of each pair's mean."""
    if interval.resample == "draws+examples":
        from ofa_eval.example_bootstrap import joint_intervals

        return joint_intervals(con, pool, curves, max_runs, interval)
    return {pair: _mean_intervals(scores, interval) for pair, (_, scores) in curves.items()}


def _mean_intervals(scores: np.ndarray, interval: IntervalOptions):
    """Bootstrap over draws (the same resamples for every r, so they stay paired)."""
    from ofa_eval.bootstrap import bootstrap_ci

    result = bootstrap_ci(scores.T, np.mean, n_resamples=interval.n_resamples, confidence_level=interval.level,
                          method=interval.method, rng=np.random.default_rng(interval.seed), keep_distribution=False)
    return np.atleast_1d(result.low), np.atleast_1d(result.high)


def record_results(con, rows: list[dict], settings: dict) -> None:
    """Append protocol rows to the store with the settings that produced them."""
    if not rows:
        return
    text = json.dumps(settings, sort_keys=True)
    con.executemany(
        "INSERT INTO protocol_result_table (task, model, strategy, variant, runs, mean, std, draws, ci_low, ci_high, "
        "settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r["task"], r["model"], r["strategy"], r["variant"], r["runs"], r["mean"], r["std"], r["draws"],
          r.get("ci_low"), r.get("ci_high"), text) for r in rows])


def pools_in_store(con, tasks: tuple[str, ...], models: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (task, model) pairs to evaluate: those named, else all in the store."""
    pairs = con.execute("SELECT DISTINCT task, model FROM run_table ORDER BY task, model").fetchall()
    if not pairs:
        raise OfaError("the store has no runs (import released results or ingest runs first)")
    known_tasks = sorted({t for t, _ in pairs})
    known_models = sorted({m for _, m in pairs})
    for task in tasks:
        if task not in known_tasks:
            raise OfaError(f"unknown task {task!r} (in the store: {', '.join(known_tasks)})")
    for model in models:
        if model not in known_models:
            raise OfaError(f"unknown model {model!r} (in the store: {', '.join(known_models)})")
    chosen = [(t, m) for t, m in pairs if (not tasks or t in tasks) and (not models or m in models)]
    if not chosen:
        raise OfaError(f"no runs for task(s) {', '.join(tasks) or 'any'} with model(s) {', '.join(models) or 'any'}")
    return chosen


@dataclass(frozen=True)
class DrawOptions:
    """How draws are made: replayed from the store, or sampled with a seed."""

    replay: bool = False
    exclude: tuple[str, ...] = ()
    n_draws: int = 10
    seed: int = 0

    def describe(self) -> str:
        if self.replay:
            left_out = f", leaving out {', '.join(self.exclude)}" if self.exclude else ""
            return f"recorded draws{left_out}"
        return f"{self.n_draws} fresh draws with seed {self.seed}"

    def draws_for(self, con, pool: Pool, max_runs: int, recipe: str | None = None) -> DrawSet:
        if self.replay:
            return recorded_draws(con, pool, max_runs, self.exclude, recipe)
        if self.exclude:
            raise OfaError("--exclude-draw applies to recorded draws: add --replay")
        if self.n_draws < 1:
            raise OfaError("--draws must be at least 1")
        return sample_draws(pool, self.n_draws, max_runs, self.seed)


def compute_protocol(con, pools: list[tuple[str, str]], pairs, options: DrawOptions, max_runs: int,
                     soup_k: int, record: bool = True, skip_incomplete: bool = False,
                     interval: IntervalOptions | None = None) -> tuple[list[dict], list[str]]:
    """Protocol rows for every pool, and notes on the pools that were skipped.

    A pool is incomplete when it has no recorded draws to replay or lacks averaged models a
    strategy needs: that is an error, unless `skip_incomplete` (the pools were not named by
    the user), when it is skipped with a note.
    """
    if max_runs is not None and max_runs < 1:
        raise OfaError("--max-runs must be at least 1")
    rows, notes = [], []
    for task, model in pools:
        try:
            rows += _pool_protocol(con, load_pool(con, task, model), pairs, options, max_runs, soup_k, record,
                                   interval)
        except IncompletePool as gap:
            if not skip_incomplete:
                raise OfaError(str(gap)) from None
            notes.append(f"skipped {gap}")
    if not rows and notes:
        raise OfaError(notes[0].removeprefix("skipped "))
    return rows, notes


def pair_curves(con, pool: Pool, pairs, options: DrawOptions, max_runs: int):
    """The draws and the (n_draws, max_runs) score matrix of every pair, and the common draws.

    Replayed averaging recipes use their own recorded order where the release has one.
    """
    common = options.draws_for(con, pool, max_runs)
    curves = {}
    for strategy, variant in pairs:
        recipe = averaging_recipe(strategy, variant)
        draws = options.draws_for(con, pool, max_runs, recipe) if options.replay and recipe else common
        try:
            curves[(strategy, variant)] = (draws, draw_scores(pool, draws, strategy, variant, max_runs))
        except MissingAverages as gap:
            raise IncompletePool(describe_missing([gap])) from None
    return common, curves


def _pool_protocol(con, pool: Pool, pairs, options: DrawOptions, max_runs: int, soup_k: int, record: bool,
                   interval: IntervalOptions | None):
    max_runs = pool_max_runs(pool, max_runs)
    common, curves = pair_curves(con, pool, pairs, options, max_runs)
    bounds = interval_bounds(con, pool, curves, max_runs, interval) if interval else None
    pool_rows = protocol_rows(pool, curves, max_runs, bounds)
    if record:
        settings = {**common.description, "max_runs": max_runs, "soup_k": soup_k}
        if interval:
            settings["interval"] = vars(interval)
        record_results(con, pool_rows, settings)
    return pool_rows


def describe_missing(gaps: list[MissingAverages], limit: int = 3) -> str:
    """One line naming the averaged models the store lacks, for the error message."""
    parts = []
    for gap in gaps:
        unique = list(dict.fromkeys((recipe, tuple(members)) for recipe, members in gap.member_sets))
        shown = "; ".join(f"{recipe} of [{', '.join(members)}]" for recipe, members in unique[:limit])
        more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
        parts.append(f"{gap.task}/{gap.model}: {len(unique)} averaged model(s) have no scores: {shown}{more}")
    return " | ".join(parts) + " (materialize them with `ofa-eval materialize`, or choose other strategies)"


def possible_draws(seed_counts: list[int], max_runs: int) -> list[int]:
    """How many distinct draws of r runs exist, r = 1..R: e_r of the configurations' seed counts."""
    coefficients = [1] + [0] * max_runs
    for n in seed_counts:
        for r in range(max_runs, 0, -1):
            coefficients[r] += coefficients[r - 1] * n
    return coefficients[1:]


def exact_rows(pool: Pool, pairs, max_runs: int) -> list[dict]:
    """Protocol rows in closed form over every possible draw (selection strategies only).

    `std` is the standard deviation of the selected run's score over all draws; `draws` is the
    number of possible draws at that r.
    """
    from ofa_eval.exact import expected_selection_curve

    max_runs = pool_max_runs(pool, max_runs)
    if max_runs > len(pool.configurations):
        raise OfaError(f"{pool.task}/{pool.model}: --max-runs {max_runs} exceeds the "
                       f"{len(pool.configurations)} distinct (learning rate, batch size) configurations")
    rows = []
    for strategy, variant in pairs:
        if STRATEGIES[strategy].kind != "select":
            raise OfaError(f"--exact applies to max-src-dev and max-trg-dev, not {strategy}")
        criterion, target = pool.criteria.get(variant, {}), pool.target_test.get(variant, {})
        run_ids = sorted(r for r in pool.config if r in criterion and r in target)
        if len(run_ids) < len(pool.config):
            raise OfaError(f"{pool.task}/{pool.model}: {len(pool.config) - len(run_ids)} run(s) lack a "
                           f"{variant!r} criterion or target score")
        configs = {c: i for i, c in enumerate(pool.configurations)}
        curve = expected_selection_curve([configs[pool.config[r]] for r in run_ids],
                                         [criterion[r] for r in run_ids], [target[r] for r in run_ids], max_runs)
        counts = possible_draws([sum(pool.config[r] == c for r in run_ids) for c in pool.configurations], max_runs)
        rows += [{"task": pool.task, "model": pool.model, "strategy": strategy, "variant": variant, "runs": r + 1,
                  "mean": float(curve.mean[r]), "std": float(curve.std[r]), "draws": counts[r]}
                 for r in range(max_runs)]
    return rows
