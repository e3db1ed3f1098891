"""Plan → materialize → score: the averaged models a protocol needs but the store lacks.

- plan: for every draw and r, the member set of each averaging strategy; those whose member
  key (the content hashes of the averaged weight files) has no scores in the store are needed.
- materialize: average the members' weights (streamed, `ofa_eval.averaging`), predict on every
  evaluation set with the task's own code (`producers.predict`), and write an averaged-model
  folder (`averages/<key>/`: `average.json`, `model.safetensors`, `predictions/*.parquet`).
  Workers write only their folder; this module never touches the store while they run.
- ingest: score the folders' predictions and record the averaged models, their ordered
  members and scores in one transaction.

The cache key is content-based, so one member set is evaluated once across variants, draws and
calls, whatever the files are called.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ofa_eval.errors import OfaError
from ofa_eval.keys import member_key
from ofa_eval.protocol import DrawOptions, Pool, averaging_recipe, load_pool

FORMAT_VERSION = 1


@dataclass(frozen=True)
class AveragePlan:
    """One averaged model to make: which runs, which weight files, under which key."""

    task: str
    model: str
    recipe: str
    run_ids: tuple[int, ...]
    member_runs: tuple[int, ...]  # the run each member file comes from (soups take several per run)
    member_files: tuple[str, ...]
    member_hashes: tuple[str, ...]
    key: str
    reference_run: str  # a member run's folder: its model config, tokenizer and evaluation sets

    @property
    def folder_name(self) -> str:
        return f"{self.task}-{self.recipe}-{self.key[:16]}"


def plan_pool(con, pool: Pool, pairs, options: DrawOptions, max_runs: int) -> list[AveragePlan]:
    """The averaged models this pool's draws need that the store has no scores for."""
    plans: dict[tuple[str, str], AveragePlan] = {}
    paths = dict(con.execute("SELECT run_id, path FROM run_table WHERE task=? AND model=?",
                             [pool.task, pool.model]).fetchall())
    for strategy, variant in pairs:
        recipe = averaging_recipe(strategy, variant)
        if recipe is None:
            continue
        draws = options.draws_for(con, pool, max_runs, recipe)
        for runs in draws.runs:
            for r in range(1, max_runs + 1):
                plan = _plan(pool, recipe, tuple(runs[:r]), paths)
                if plan is not None and (recipe, plan.key) not in pool.averages:
                    plans.setdefault((recipe, plan.key), plan)
    return list(plans.values())


def _plan(pool: Pool, recipe: str, run_ids: tuple[int, ...], paths: dict) -> AveragePlan | None:
    if any(run_id in pool.released for run_id in run_ids):
        return None  # released results come with their averaged models' scores, and no weights
    hashes = pool.member_identities(recipe, list(run_ids))
    if hashes is None:
        names = ", ".join(pool.external_id[r] for r in run_ids)
        raise OfaError(f"{pool.task}/{pool.model}: the {recipe} weights of runs [{names}] were not kept, "
                       "so their average cannot be made")
    return AveragePlan(pool.task, pool.model, recipe, run_ids, _member_runs(pool, run_ids, hashes),
                       tuple(pool.weight_paths[h] for h in hashes), tuple(hashes), member_key(hashes),
                       paths[run_ids[0]])


def _member_runs(pool: Pool, run_ids: tuple[int, ...], hashes: list[str]) -> tuple[int, ...]:
    owner: dict[str, int] = {}
    for run_id in run_ids:
        files = [sha for *_, sha in pool.snapshot_ranking.get(run_id, [])]
        files += [by_run[run_id] for by_run in pool.variant_weights.values() if run_id in by_run]
        for sha in files:
            owner.setdefault(sha, run_id)
    return tuple(owner[h] for h in hashes)


def plan(con, pools, pairs, options: DrawOptions, max_runs: int) -> list[AveragePlan]:
    return [p for task, model in pools for p in plan_pool(con, load_pool(con, task, model), pairs, options, max_runs)]


def make_average(plan: AveragePlan, out_root: Path, predictor=None) -> Path:
    """Average, predict and write one averaged-model folder; reuses a complete one."""
    from ofa_eval.averaging import average_checkpoints

    folder = Path(out_root) / plan.folder_name
    manifest_path = folder / "average.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("state") == "complete":
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    average_checkpoints([Path(p) for p in plan.member_files], weights)
    if predictor is None:
        from producers.predict import predict_with_weights as predictor
    predictor(Path(plan.reference_run), weights, folder / "predictions")
    manifest = {"format_version": FORMAT_VERSION, "state": "complete", "task": plan.task, "model": plan.model,
                "recipe": plan.recipe, "member_key": plan.key, "reference_run": plan.reference_run,
                "weights": "model.safetensors",
                "runs": list(plan.run_ids),
                "members": [{"run_id": r, "weights": f, "sha256": h}
                            for r, f, h in zip(plan.member_runs, plan.member_files, plan.member_hashes)]}
    temporary = manifest_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, manifest_path)
    return folder


def ingest_averages(con, folders: list[Path]) -> int:
    """Score averaged-model folders and record them; one transaction for all of them."""
    from ofa_eval.ingest import read_manifest, score_predictions
    from ofa_eval.store import transaction

    scored = []
    for folder in folders:
        manifest = json.loads((folder / "average.json").read_text())
        reference = Path(manifest["reference_run"])
        run_manifest = read_manifest(reference)
        scores, example_stats = score_predictions(manifest["task"], reference, run_manifest["eval_sets"],
                                                  folder / "predictions")
        scored.append((folder, manifest, run_manifest["eval_sets"], scores, example_stats))
    with transaction(con):
        for scored_average in scored:
            _record_average(con, *scored_average)
    return len(scored)


def _record_average(con, folder: Path, manifest: dict, eval_sets, scores, example_stats) -> None:
    from ofa_eval.ingest import example_stat_rows, insert_example_stats
    from ofa_eval.store import ensure_eval_set

    task, members = manifest["task"], manifest["members"]
    exists = con.execute("SELECT count(*) FROM average_table WHERE task=? AND model=? AND recipe=? AND member_key=?",
                         [task, manifest["model"], manifest["recipe"], manifest["member_key"]]).fetchall()[0][0]
    if exists:
        return
    average_id = con.execute(
        "INSERT INTO average_table (task, model, recipe, member_key, n_members, weights_path) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING average_id",
        [task, manifest["model"], manifest["recipe"], manifest["member_key"], len(members),
         str((folder / manifest["weights"]).resolve())]).fetchall()[0][0]
    con.executemany("INSERT INTO average_member_table (average_id, position, run_id, weight) VALUES (?, ?, ?, ?)",
                    [(average_id, i, m["run_id"], 1.0 / len(members)) for i, m in enumerate(members, 1)])
    roles = {(e["dataset"], e["language"], e["split"]): e for e in eval_sets}
    rows, stat_rows = [], []
    for key, values in scores.items():
        e = roles[key]
        eval_set_id = ensure_eval_set(con, task, *key, e["role"], e.get("n_examples"))
        rows += [(average_id, eval_set_id, metric, value) for metric, value in values.items()]
        if key in example_stats:
            stat_rows += example_stat_rows((None, None, average_id), eval_set_id, example_stats[key])
    con.executemany("INSERT INTO score_table (average_id, eval_set_id, metric, value) VALUES (?, ?, ?, ?)", rows)
    insert_example_stats(con, stat_rows)
