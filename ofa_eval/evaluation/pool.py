"""A pool: everything the store knows about one (task, model) that the protocol needs.

Its runs with their (learning rate, batch size) configuration, each run variant's selection
criteria and target score, the scores of averaged models keyed by their member sets, and which
weight files an averaged model of given runs is made of.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ofa_eval.common.errors import OfaError
from ofa_eval.common.keys import member_key

DEFAULT_MAX_RUNS = 10  # the paper's r = 1..10


class IncompletePool(OfaError):
    """A pool lacks what the protocol needs: recorded draws or averaged models. `short`: the same
    in fewer words, for a note where the pool is skipped rather than an error."""

    def __init__(self, message: str, short: str | None = None):
        super().__init__(message)
        self.short = short or message


@dataclass(frozen=True)
class AveragedMembers:
    """The weight files an averaged model of some runs is made of, and the run each comes from."""

    hashes: tuple[str, ...]
    files: tuple[str, ...]
    runs: tuple[int, ...]

    @property
    def key(self) -> str:
        return member_key(self.hashes)


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

    @property
    def name(self) -> str:
        return f"{self.task}/{self.model}"

    @property
    def has_weights(self) -> bool:
        """Whether any weight file is known, so that averaged models could be made."""
        return any(self.weight_paths.values())

    def check_max_runs(self, max_runs: int) -> None:
        """Draws hold distinct configurations, so r cannot exceed their number."""
        if max_runs > len(self.configurations):
            raise OfaError(f"{self.name}: --max-runs {max_runs} exceeds the {len(self.configurations)} "
                           "distinct (learning rate, batch size) configurations")

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

    def averaged_members(self, recipe: str, run_ids: list[int]) -> AveragedMembers | None:
        """The weight files of the averaged model of these runs (None where weights were not kept)."""
        hashes = self.member_identities(recipe, run_ids)
        if hashes is None or any(run_id in self.released for run_id in run_ids):
            return None
        owner = self._file_owners(run_ids)
        return AveragedMembers(tuple(hashes), tuple(self.weight_paths[h] for h in hashes),
                               tuple(owner[h] for h in hashes))

    def _file_owners(self, run_ids: list[int]) -> dict[str, int]:
        owner: dict[str, int] = {}
        for run_id in run_ids:
            files = [sha for *_, sha in self.snapshot_ranking.get(run_id, [])]
            files += [by_run[run_id] for by_run in self.variant_weights.values() if run_id in by_run]
            for sha in files:
                owner.setdefault(sha, run_id)
        return owner

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


def pool_max_runs(pool: Pool, max_runs: int | None) -> int:
    """The largest r: as asked, else 10 or the pool's number of configurations if smaller."""
    return max_runs if max_runs is not None else min(DEFAULT_MAX_RUNS, len(pool.configurations))


def load_pool(con, task: str, model: str) -> Pool:
    rows = con.execute(
        "SELECT run_id, external_id, learning_rate, batch_size FROM run_table WHERE task=? AND model=? ORDER BY run_id",
        [task, model]).fetchall()
    if not rows:
        raise OfaError(f"no runs of task {task!r} with model {model!r} in the store")
    pool = Pool(task, model, {r[0]: r[1] for r in rows}, {r[0]: (r[2], r[3]) for r in rows}, {}, {})
    for run_id, variant, role, value in con.execute(_RUN_SCORES_SQL, [task, model]).fetchall():
        scores = pool.target_test if role == "target" else pool.criteria
        scores.setdefault(variant, {})[run_id] = value
    for run_id, value in con.execute(
            "SELECT run_id, value FROM selection_scores WHERE task=? AND model=? AND criterion='target-dev'",
            [task, model]).fetchall():
        pool.criteria.setdefault("trg-dev", {})[run_id] = value
    for recipe, key, role, value in con.execute(_AVERAGE_SCORES_SQL, [task, model]).fetchall():
        (pool.averages if role == "target" else pool.average_source_dev)[(recipe, key)] = value
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


# A pool's two scores of each run variant and averaged model in one pass over score_table (the
# store's first reads dominate a protocol call): the mean over target test sets (as the views
# run_variants and average_scores define target_test) and the source validation score, both in
# the task's metric.
_SCORE_ROLES = """
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE {owner}.task = ? AND {owner}.model = ?{extra}
  AND ((e.role = 'target' AND e.split = 'test') OR (e.role = 'source' AND e.split = 'validation'))
GROUP BY ALL
"""

_RUN_SCORES_SQL = """
SELECT sc.run_id, sc.variant, e.role, avg(sc.value)
FROM score_table sc
JOIN run_table r USING (run_id)""" + _SCORE_ROLES.format(owner="r", extra="")

_AVERAGE_SCORES_SQL = """
SELECT a.recipe, a.member_key, e.role, avg(sc.value)
FROM score_table sc
JOIN average_table a USING (average_id)""" + _SCORE_ROLES.format(owner="a", extra=" AND a.approach = 'all'")


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
