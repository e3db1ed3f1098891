"""Plan → materialize → score: the averaged models a protocol needs but the store lacks.

- plan: for every draw and r, the member set of each averaging strategy; those whose member
  key (the content hashes of the averaged weight files) has no scores in the store are needed.
- materialize: average the members' weights (streamed, `ofa_eval.averaging`), predict on every
  evaluation set with the task's own code (`producers.predict`), and write an averaged-model
  folder (`averages/<key>/`: `average.json`, `model.safetensors`, `predictions/*.parquet`).
  Workers write only their folder; this module never touches the store while they run.
- ingest: score the folders' predictions and record the averaged models, their ordered
  members and scores in one transaction.

Greedy soups are planned one step at a time: each greedy path needs the source validation score
of its next candidate before it knows the one after, so materializing repeats plan → make →
ingest until nothing is missing (at most R - 1 rounds).

The cache key is content-based, so one member set is evaluated once across variants, draws and
calls, whatever the files are called.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ofa_eval.errors import OfaError
from ofa_eval.keys import member_key
from ofa_eval.protocol import DrawOptions, Pool, averaging_recipe, greedy_soup, load_pool, pool_max_runs

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
    max_runs = pool_max_runs(pool, max_runs)
    paths = dict(con.execute("SELECT run_id, path FROM run_table WHERE task=? AND model=?",
                             [pool.task, pool.model]).fetchall())
    for strategy, variant in pairs:
        recipe = averaging_recipe(strategy, variant)
        if recipe is None:
            continue
        draws = options.draws_for(con, pool, max_runs, recipe)
        for runs in draws.runs:
            for r in range(1, max_runs + 1):
                members = _members_needed(pool, strategy, variant, runs[:r])
                plan = None if members is None else _plan(pool, recipe, members, paths)
                if plan is not None and (recipe, plan.key) not in pool.averages:
                    plans.setdefault((recipe, plan.key), plan)
    return list(plans.values())


def _members_needed(pool: Pool, strategy: str, variant: str, runs: list[int]) -> tuple[int, ...] | None:
    """The runs of the averaged model a cell needs: the first r runs, or for a greedy soup the
    next candidate its path needs (None once the path is complete: then nothing is missing)."""
    if strategy != "greedy-soup":
        return tuple(runs)
    needs = greedy_soup(pool, variant, list(runs)).needs
    return None if needs is None else tuple(needs)


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


def make_average(plan: AveragePlan, out_root: Path, predictor=None, reuse_member_predictions: bool = True) -> Path:
    """Average, predict and write one averaged-model folder; reuses a complete one.

    The average of one model is that model (fp32 accumulation divides by one exactly), so a
    one-member plan copies its member's predictions and points at its weights instead of
    averaging and predicting again (`tests/test_end_to_end.py` checks that both agree).
    """
    folder = Path(out_root) / plan.folder_name
    manifest_path = folder / "average.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("state") == "complete":
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    own = _member_predictions(plan) if reuse_member_predictions else None
    if own is not None:
        shutil.copytree(own, folder / "predictions", dirs_exist_ok=True)
        weights = str(Path(plan.member_files[0]).resolve())
    else:
        _average_and_predict(plan, folder, predictor)
        weights = "model.safetensors"
    manifest = {"format_version": FORMAT_VERSION, "state": "complete", "task": plan.task, "model": plan.model,
                "recipe": plan.recipe, "member_key": plan.key, "reference_run": plan.reference_run,
                "weights": weights,
                "runs": list(plan.run_ids),
                "members": [{"run_id": r, "weights": f, "sha256": h}
                            for r, f, h in zip(plan.member_runs, plan.member_files, plan.member_hashes)]}
    temporary = manifest_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, manifest_path)
    return folder


def make_averages_here(plans: list[AveragePlan], out_root: Path) -> list[Path]:
    """Make the plans' folders in this process, one after another, with a progress bar."""
    from tqdm import tqdm

    return [make_average(p, out_root) for p in tqdm(plans, desc="materializing averaged models", unit="model")]


def make_averages_with(executor, plans: list[AveragePlan], out_root: Path) -> list[Path]:
    """Make the plans' folders as one submitit job array (SLURM, or the local executor in tests)
    and wait for them; a failed job raises with its log's tail."""
    from tqdm import tqdm

    executor.update_parameters(name="ofa-eval-materialize")
    with executor.batch():
        jobs = [executor.submit(make_average, p, str(out_root)) for p in plans]
    print(f"submitted {len(jobs)} materialization job(s): {' '.join(str(j.job_id) for j in jobs[:5])}"
          + (" ..." if len(jobs) > 5 else ""), file=sys.stderr)
    return [Path(job.result()) for job in tqdm(jobs, desc="waiting for averaged models", unit="model")]


def _average_and_predict(plan: AveragePlan, folder: Path, predictor) -> None:
    from ofa_eval.averaging import average_checkpoints

    weights = folder / "model.safetensors"
    average_checkpoints([Path(p) for p in plan.member_files], weights)
    if predictor is None:
        from producers.predict import predict_with_weights as predictor
    predictor(Path(plan.reference_run), weights, folder / "predictions")


def _member_predictions(plan: AveragePlan) -> Path | None:
    """The prediction folder of a one-member plan's member, when its run folder has one."""
    if len(plan.member_files) != 1:
        return None
    run_dir = Path(plan.reference_run)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    subjects = {(run_dir / s["weights"]).resolve(): f"snapshot-{s['index']:02d}"
                for s in manifest["snapshots"] if s.get("weights")}
    if (manifest.get("ca") or {}).get("weights"):
        subjects[(run_dir / manifest["ca"]["weights"]).resolve()] = "ca"
    subject = subjects.get(Path(plan.member_files[0]).resolve())
    folder = run_dir / "predictions" / subject if subject else None
    return folder if folder is not None and folder.is_dir() else None


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
