"""Plan → materialize → score: the averaged models a protocol needs but the store lacks.

- plan: for every draw and r, the member set of each averaging strategy; those whose member
  key (the content hashes of the averaged weight files) has no scores in the store are needed.
- materialize: average the members' weights (streamed, `ofa_eval.weights.averaging`), predict on every
  evaluation set with a predictor the caller hands in (the command layer passes the producers'
  `predict_with_weights`: the engine never imports the producers), and write an averaged-model
  folder (`averages/<key>/`: `average.json`, `model.safetensors`, `predictions/*.parquet`).
  Workers write only their folder; this module never touches the store while they run. On
  SLURM the folders are made by one job array whose tasks each make several averages of one
  pool (`job_groups`), building the model and tokenizing once per task.
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
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ofa_eval.averages.defaults import AVERAGES_PER_JOB
from ofa_eval.common.errors import OfaError
from ofa_eval.jobs.slurm import Unfinished
from ofa_eval.evaluation import (DEFAULT_MAX_RUNS, DrawOptions, Pool, get_strategy, load_pool,
                               pools_in_store)
from ofa_eval.artifacts.run_format import (AVERAGE_MANIFEST, AVERAGE_WEIGHTS, CA_SUBJECT, FORMAT_VERSION, MANIFEST,
                                 PREDICTIONS, predictions_folder, snapshot_subject)
from ofa_eval.common.tempfiles import remove_orphans, temporary_path


# predictor(run folder, weights file, output folder): writes one prediction table per evaluation set
Predictor = Callable[[Path, Path, Path], object]


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
    max_runs = options.max_runs_for(con, pool, max_runs)
    paths = dict(con.execute("SELECT run_id, path FROM run_table WHERE task=? AND model=?",
                             [pool.task, pool.model]).fetchall())
    for name, variant in pairs:
        strategy = get_strategy(name)
        recipe = strategy.recipe(variant)
        if recipe is None:
            continue
        draws = options.draws_for(con, pool, max_runs, recipe)
        for runs in draws.runs:
            for r in range(1, max_runs + 1):
                members = strategy.members_needed(pool, variant, runs[:r])
                plan = None if members is None else _plan(pool, recipe, members, paths)
                if plan is not None and (recipe, plan.key) not in pool.averages:
                    plans.setdefault((recipe, plan.key), plan)
    return list(plans.values())


def _plan(pool: Pool, recipe: str, run_ids: tuple[int, ...], paths: dict) -> AveragePlan | None:
    if any(run_id in pool.released for run_id in run_ids):
        return None  # released results come with their averaged models' scores, and no weights
    members = pool.averaged_members(recipe, list(run_ids))
    if members is None:
        names = ", ".join(pool.external_id[r] for r in run_ids)
        raise OfaError(f"{pool.name}: the {recipe} weights of runs [{names}] were not kept, "
                       "so their average cannot be made")
    return AveragePlan(pool.task, pool.model, recipe, run_ids, members.runs, members.files, members.hashes,
                       members.key, paths[run_ids[0]])


def plan(con, pools, pairs, options: DrawOptions, max_runs: int) -> list[AveragePlan]:
    return [p for task, model in pools for p in plan_pool(con, load_pool(con, task, model), pairs, options, max_runs)]


def is_complete(folder: Path) -> bool:
    """Whether an averaged-model folder was finished (its manifest is written last)."""
    manifest = Path(folder) / AVERAGE_MANIFEST
    return manifest.is_file() and json.loads(manifest.read_text()).get("state") == "complete"


def make_average(plan: AveragePlan, out_root: Path, predictor: Predictor,
                 reuse_member_predictions: bool = True) -> Path:
    """Average, predict and write one averaged-model folder; reuses a complete one.

    The average of one model is that model (fp32 accumulation divides by one exactly), so a
    one-member plan copies its member's predictions and points at its weights instead of
    averaging and predicting again (`tests/test_end_to_end.py` checks that both agree).
    """
    folder = Path(out_root) / plan.folder_name
    manifest_path = folder / AVERAGE_MANIFEST
    if is_complete(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    remove_orphans(folder)
    own = _member_predictions(plan) if reuse_member_predictions else None
    if own is not None:
        shutil.copytree(own, folder / PREDICTIONS, dirs_exist_ok=True)
        weights = str(Path(plan.member_files[0]).resolve())
    else:
        _average_and_predict(plan, folder, predictor)
        weights = AVERAGE_WEIGHTS
    manifest = {"format_version": FORMAT_VERSION, "state": "complete", "task": plan.task, "model": plan.model,
                "recipe": plan.recipe, "member_key": plan.key, "reference_run": plan.reference_run,
                "weights": weights,
                "runs": list(plan.run_ids),
                "members": [{"run_id": r, "weights": f, "sha256": h}
                            for r, f, h in zip(plan.member_runs, plan.member_files, plan.member_hashes)]}
    temporary = temporary_path(manifest_path)
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, manifest_path)
    return folder


def make_averages(plans: list[AveragePlan], out_root, predictor: Predictor, progress: bool = False) -> list[Path]:
    """Make the plans' folders one after another in this process (one array task, or all of
    them here with a progress bar), so that the predictor builds the model and tokenizes the
    evaluation sets once for all of them."""
    from tqdm import tqdm

    return [make_average(p, Path(out_root), predictor)
            for p in tqdm(plans, desc="materializing averaged models", unit="model", disable=not progress)]


def job_groups(plans: list[AveragePlan], per_job: int) -> list[list[AveragePlan]]:
    """The plans as array tasks: plans of one pool together (they share the model config,
    tokenizer and evaluation sets), at most `per_job` a task, each pool's plans spread evenly."""
    pools: dict[tuple[str, str], list[AveragePlan]] = {}
    for p in plans:
        pools.setdefault((p.task, p.model), []).append(p)
    groups = []
    for pool in pools.values():
        size = math.ceil(len(pool) / math.ceil(len(pool) / per_job))
        groups += [pool[i:i + size] for i in range(0, len(pool), size)]
    return groups


def make_averages_with(executor, plans: list[AveragePlan], out_root: Path, predictor: Predictor, wait: bool = True,
                       timeout_min: float | None = None, progress: bool = True,
                       per_job: int = AVERAGES_PER_JOB) -> list[Path]:
    """Make the plans' folders as one submitit job array (SLURM, or the local executor in tests),
    each array task making up to `per_job` averaged models of one pool (`job_groups`).

    Folders already complete are not submitted again. On SLURM only plans that are neither
    complete nor queued or running (`<executor folder>/jobs.json`, squeue) are submitted, and
    the jobs are awaited (unless `wait` is false) until each finished or failed, or for
    `timeout_min`. Returns the folders when all are complete; otherwise raises
    `ofa_eval.jobs.slurm.Unfinished`, whose `finished` the caller ingests.
    """
    from ofa_eval.jobs.slurm import Outcome, Record, resume_hint, still_queued, submit_array, wait_for

    out_root = Path(out_root)
    names = [p.folder_name for p in plans]

    def is_done(name: str) -> bool:
        return is_complete(out_root / name)

    def calls(todo: list[AveragePlan]) -> list[tuple]:
        return [(tuple(p.folder_name for p in group), make_averages, (group, str(out_root), predictor))
                for group in job_groups(todo, per_job)]

    if getattr(executor, "cluster", None) != "slurm":  # submitit's local executor: no queue to ask
        executor.update_parameters(name="ofa-eval-materialize")
        with executor.batch():
            jobs = [executor.submit(function, *args) for _, function, args in calls(
                [p for p in plans if not is_done(p.folder_name)])]
        for job in jobs:
            job.result()
        return [out_root / name for name in names]
    record = Record(executor.folder)
    with record.locked():
        jobs = record.load()
        queued = still_queued(jobs, names, is_done)
        todo = [p for p in plans if not is_done(p.folder_name) and p.folder_name not in queued]
        submitted = submit_array(executor, "ofa-eval-materialize", calls(todo))
        record.save({**jobs, **{job.name: job for job in submitted}})
    tasks = len({job.job_id for job in submitted})
    print(f"submitted {tasks} materialization job(s) (tasks of one job array) for {len(submitted)} averaged "
          f"model(s), {len(queued)} already queued or running; {sum(map(is_done, names))} of {len(names)} "
          "averaged model(s) already made", file=sys.stderr)
    waiting = submitted + list(queued.values())
    if wait:
        outcome = wait_for(waiting, is_done, "waiting for averaged models", timeout_min, progress, unit="model")
    else:
        outcome = Outcome(waiting=waiting)
    finished = [out_root / name for name in names if is_done(name)]
    if len(finished) < len(names):
        raise Unfinished(executor.folder, outcome, finished, resume_hint())
    return finished


def _average_and_predict(plan: AveragePlan, folder: Path, predictor: Predictor) -> None:
    from ofa_eval.weights.averaging import average_checkpoints

    weights = folder / AVERAGE_WEIGHTS
    average_checkpoints([Path(p) for p in plan.member_files], weights)
    predictor(Path(plan.reference_run), weights, folder / PREDICTIONS)


def _member_predictions(plan: AveragePlan) -> Path | None:
    """The prediction folder of a one-member plan's member, when its run folder has one."""
    if len(plan.member_files) != 1:
        return None
    run_dir = Path(plan.reference_run)
    manifest = json.loads((run_dir / MANIFEST).read_text())
    subjects = {(run_dir / s["weights"]).resolve(): snapshot_subject(s["index"])
                for s in manifest["snapshots"] if s.get("weights")}
    if (manifest.get("ca") or {}).get("weights"):
        subjects[(run_dir / manifest["ca"]["weights"]).resolve()] = CA_SUBJECT
    subject = subjects.get(Path(plan.member_files[0]).resolve())
    folder = run_dir / predictions_folder(subject) if subject else None
    return folder if folder is not None and folder.is_dir() else None


def ingest_averages(con, folders: list[Path]) -> int:
    """Score averaged-model folders and record them; one transaction for all of them."""
    from ofa_eval.artifacts.scoring import read_manifest, score_predictions
    from ofa_eval.store.database import transaction

    scored = []
    for folder in folders:
        manifest = json.loads((folder / AVERAGE_MANIFEST).read_text())
        reference = Path(manifest["reference_run"])
        run_manifest = read_manifest(reference)
        scores, example_stats = score_predictions(manifest["task"], reference, run_manifest["eval_sets"],
                                                  folder / PREDICTIONS)
        scored.append((folder, manifest, run_manifest["eval_sets"], scores, example_stats))
    with transaction(con):
        for scored_average in scored:
            _record_average(con, *scored_average)
    return len(scored)


def _record_average(con, folder: Path, manifest: dict, eval_sets, scores, example_stats) -> None:
    from ofa_eval.artifacts.ingest import example_stat_rows, insert_example_stats
    from ofa_eval.store.database import ensure_eval_set, insert_rows

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
    insert_rows(con, "average_member_table", ("average_id", "position", "run_id", "weight"),
                [(average_id, i, m["run_id"], 1.0 / len(members)) for i, m in enumerate(members, 1)])
    roles = {(e["dataset"], e["language"], e["split"]): e for e in eval_sets}
    rows, stat_rows = [], []
    for key, values in scores.items():
        e = roles[key]
        eval_set_id = ensure_eval_set(con, task, *key, e["role"], e.get("n_examples"))
        rows += [(average_id, eval_set_id, metric, value) for metric, value in values.items()]
        if key in example_stats:
            stat_rows += example_stat_rows((None, None, average_id), eval_set_id, example_stats[key])
    insert_rows(con, "score_table", ("average_id", "eval_set_id", "metric", "value"), rows)
    insert_example_stats(con, stat_rows)


# maker(plans, root): makes the plans' averaged-model folders under root and returns them
Maker = Callable[[list[AveragePlan], Path], list[Path]]


def averages_root(db_path, out) -> Path:
    """Where averaged-model folders go: `out`, else averages/ beside the store."""
    return Path(out) if out else Path(db_path).resolve().parent / "averages"


def materialize_missing(db_path, tasks, models, pairs, options: DrawOptions, max_runs: int | None, root: Path,
                        maker: Maker) -> int:
    """Plan with the store open, make the averages with it closed, then ingest; repeat until
    nothing is missing (greedy soups learn their next candidates from the last round's scores).
    Returns the number of averaged models ingested."""
    from ofa_eval.store.database import connected

    made, seen = 0, set()
    for _ in range(max_runs or DEFAULT_MAX_RUNS):  # a greedy path takes at most R - 1 rounds
        with connected(db_path, must_exist=True) as con:
            plans = plan(con, pools_in_store(con, tasks, models), pairs, options, max_runs)
        if not plans:
            break
        keys = {(p.task, p.model, p.recipe, p.key) for p in plans}
        if keys & seen:
            raise OfaError(f"{root}: averaged models were made but the store still lacks them")
        seen |= keys
        try:
            folders = maker(plans, root)
        except Unfinished as unfinished:  # ingest what finished, then report the rest
            with connected(db_path) as con:
                made += ingest_averages(con, unfinished.finished)
            if unfinished.failed:
                print(f"{made} averaged model(s) ingested", file=sys.stderr)
                raise
            print(unfinished, file=sys.stderr)
            return made
        with connected(db_path) as con:
            made += ingest_averages(con, folders)
    return made
