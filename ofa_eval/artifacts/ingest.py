"""`ofa-eval ingest`: load complete run folders (docs/artifacts.md) into the store.

Each run is validated and scored by `ofa_eval.artifacts.scoring` (its predictions with the task's metric,
and the run variants derived from them); this module stages the resulting rows and inserts them.
Three phases, so that memory does not grow with the number of runs and the store's write lock
is held only while inserting:
1. find the run folders and check their manifests (no store), then learn from a brief
   connection which runs the store already holds;
2. without the store: validate and score the runs in a process pool, a batch of runs per task;
   each batch's rows go to Parquet files in a staging folder beside the store
   (`<store>.ingest-<pid>/`, removed at the end, swept by the next ingest if its owner died);
3. open the store writable (waiting for the lock, `ofa_eval.store.database`) and insert every staged
   row in ONE transaction, through DuckDB's Parquet reader: all runs or none.
Averaged models' example statistics (`ofa_eval.averages.materialize`) go in through the same Arrow
column type (`example_stat_rows`, `insert_example_stats`).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ofa_eval.common.errors import OfaError
from ofa_eval.artifacts.run_format import run_name, snapshot_subject
from ofa_eval.artifacts.scoring import ExampleStats, ScoredRun, derive_variants, score_run, variant_weights
from ofa_eval.store.database import connected, disk_full_error, ensure_eval_set, ensure_task, is_disk_full, transaction
from ofa_eval.common.tempfiles import remove_orphans, temporary_path
from ofa_eval.artifacts.validation import CheckedManifest, check_run_folders, conflicts_with_store

MAX_BATCH = 8  # runs a worker scores before writing their rows: bounds each worker's memory


# ---------------------------------------------------------------------------------------------
# Staging: the rows of scored runs as Parquet files, keyed by the run's ordinal in this ingest

SET = [("dataset", pa.string()), ("language", pa.string()), ("split", pa.string())]
STAGED = {
    "runs": pa.schema([("ordinal", pa.int64()), ("task", pa.string()), ("model", pa.string()),
                       ("metric", pa.string()), ("learning_rate", pa.float64()), ("batch_size", pa.int32()),
                       ("seed", pa.int64()), ("epochs", pa.int32()), ("external_id", pa.string()),
                       ("path", pa.string()), ("widest_values", pa.int64())]),
    "snapshots": pa.schema([("ordinal", pa.int64()), ("snapshot_index", pa.int32()), ("step", pa.int64()),
                            ("epoch", pa.float64()), ("weights_path", pa.string()),
                            ("weights_sha256", pa.string()), ("weights_bytes", pa.int64())]),
    "eval_sets": pa.schema([("ordinal", pa.int64()), ("position", pa.int32()), ("task", pa.string()), *SET,
                            ("role", pa.string()), ("n_examples", pa.int32())]),
    "scores": pa.schema([("ordinal", pa.int64()), ("snapshot_index", pa.int32()), ("variant", pa.string()), *SET,
                         ("metric", pa.string()), ("value", pa.float64())]),
    "example_stats": pa.schema([("ordinal", pa.int64()), ("variant", pa.string()), *SET,
                                ("statistic", pa.string()), ("examples_sha256", pa.string()),
                                ("values", pa.list_(pa.float64()))]),
    "selection": pa.schema([("ordinal", pa.int64()), ("value", pa.float64())]),
    "run_weights": pa.schema([("ordinal", pa.int64()), ("variant", pa.string()), ("weights_path", pa.string()),
                              ("weights_sha256", pa.string())]),
}


class StagedRows:
    """The store rows of a batch of scored runs, column by column; `write` puts them in Parquet files."""

    def __init__(self):
        self.columns = {kind: {name: [] for name in schema.names} for kind, schema in STAGED.items()}

    def _add(self, kind: str, *values) -> None:
        for column, value in zip(self.columns[kind].values(), values):
            column.append(value)

    def add(self, ordinal: int, run: ScoredRun) -> None:
        m = run.manifest
        widest = max((len(v) for stats in run.example_stats.values() for v in stats.stats.values()), default=0)
        self._add("runs", ordinal, m["task"], m["model"], run.metric_name, float(m["learning_rate"]),
                  m["batch_size"], m["seed"], m.get("epochs"), run.external_id, str(run.path.resolve()), widest)
        for s in run.snapshots:
            self._add("snapshots", ordinal, s["index"], s["step"], s["epoch"], s["weights_path"], s["sha256"], s["bytes"])
        for position, e in enumerate(m["eval_sets"]):
            self._add("eval_sets", ordinal, position, m["task"], e["dataset"], e["language"], e["split"], e["role"],
                      e.get("n_examples"))
        indexes = {snapshot_subject(s["index"]): s["index"] for s in run.snapshots}
        for (subject, *key), values in run.scores.items():
            if subject in indexes:
                for metric, value in values.items():
                    self._add("scores", ordinal, indexes[subject], None, *key, metric, value)
        variants, target_dev = derive_variants(run)
        for (variant, *key), subject in variants.items():
            for metric, value in run.scores[(subject, *key)].items():
                self._add("scores", ordinal, None, variant, *key, metric, value)
            stats = run.example_stats.get((subject, *key))
            for name, values in (stats.stats.items() if stats else ()):
                self._add("example_stats", ordinal, variant, *key, name, stats.examples_sha256,
                          np.asarray(values, dtype=np.float64))
        if target_dev is not None:
            self._add("selection", ordinal, target_dev)
        for variant, (path, sha256) in variant_weights(run).items():
            self._add("run_weights", ordinal, variant, path, sha256)

    def write(self, folder: Path, batch: int) -> None:
        for kind, schema in STAGED.items():
            columns = dict(self.columns[kind])
            if kind == "example_stats":
                columns["values"] = _list_array(columns["values"])
            table = pa.table({name: pa.array(values, schema.field(name).type) if not isinstance(values, pa.Array)
                              else values for name, values in columns.items()}, schema=schema)
            pq.write_table(table, folder / f"{kind}-{batch:06d}.parquet")


def _list_array(arrays: list[np.ndarray]) -> pa.Array:
    """A list<double> column from numpy arrays, without going through Python lists."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)).cast(pa.list_(pa.float64()))


def stage_batch(batch: int, first_ordinal: int, runs: list[tuple[str, CheckedManifest]], folder: str) -> None:
    """Validate and score a batch of runs, (folder, manifest as phase 1 read it), and write their
    rows to `folder` (a pool worker's task)."""
    rows = StagedRows()
    for ordinal, (run_dir, manifest) in enumerate(runs, first_ordinal):
        rows.add(ordinal, score_run(Path(run_dir), manifest.parsed()))
    rows.write(Path(folder), batch)


def _batches(runs: list[tuple[Path, CheckedManifest]], workers: int
             ) -> list[tuple[int, int, list[tuple[str, CheckedManifest]]]]:
    """(batch number, first ordinal, runs): batches small enough to bound memory, and enough of
    them to keep every worker busy."""
    size = max(1, min(MAX_BATCH, math.ceil(len(runs) / max(1, workers))))
    return [(n, start, [(str(path), manifest) for path, manifest in runs[start:start + size]])
            for n, start in enumerate(range(0, len(runs), size))]


def stage_runs(runs: list[tuple[Path, CheckedManifest]], folder: Path, workers: int, progress: bool = False) -> None:
    """Phase 2: every run (folder, manifest) validated, scored and written to `folder`, in a pool
    of `workers` processes. The first failing run (in folder order) stops everything with its error."""
    batches = _batches(runs, workers)
    bar = _progress_bar(len(runs), progress)
    try:
        if workers <= 1 or len(batches) <= 1:
            for batch in batches:
                stage_batch(*batch, str(folder))
                bar.update(len(batch[2]))
            return
        _stage_in_pool(batches, folder, workers, bar)
    finally:
        bar.close()


@contextlib.contextmanager
def _one_polars_thread_per_worker():
    """Workers started in this block read Parquet with one polars thread each (unless the user set
    POLARS_MAX_THREADS): the workers already fill the cores, and each polars thread pool of the
    cores' size made the many small reads about 10% slower."""
    if "POLARS_MAX_THREADS" in os.environ:
        yield
        return
    os.environ["POLARS_MAX_THREADS"] = "1"  # read by polars when a spawned worker imports it
    try:
        yield
    finally:
        del os.environ["POLARS_MAX_THREADS"]


def _stage_in_pool(batches, folder: Path, workers: int, bar) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold DuckDB and polars thread pools, which fork can deadlock
    with _one_polars_thread_per_worker(), \
            ProcessPoolExecutor(min(workers, len(batches)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(stage_batch, *batch, str(folder)) for batch in batches]
        try:
            for future, batch in zip(futures, batches):
                future.result()
                bar.update(len(batch[2]))
        except BaseException:
            for future in futures:
                future.cancel()
            raise


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled or not total:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="scoring runs", unit="run")


# ---------------------------------------------------------------------------------------------
# Phase 3: one transaction that inserts every staged row


def _staged(folder: Path, kind: str) -> str:
    return str(folder / f"{kind}-*.parquet")


def _reserve_ids(con, sequence: str, n: int) -> int:
    """The first of n consecutive new ids of `sequence` (we hold the write lock: nobody interleaves)."""
    if n == 0:
        return 0
    low, high = con.execute(f"SELECT min(v), max(v) FROM (SELECT nextval('{sequence}') AS v FROM range(?))",
                            [n]).fetchall()[0]
    assert high - low + 1 == n, (sequence, low, high, n)
    return low


def insert_staged(con, folder: Path) -> tuple[list[str], list[str]]:
    """Insert the staged runs (call inside a transaction). Returns (ingested, already): runs that
    another ingest added since phase 1 are skipped; a conflicting one is an error."""
    # the temporary tables go with the transaction's rollback on failure (a statement in an
    # aborted transaction would only raise again, hiding the first error)
    con.execute("CREATE TEMP TABLE ingest_runs AS SELECT * FROM read_parquet(?) ORDER BY ordinal",
                [_staged(folder, "runs")])
    already = _drop_already_ingested(con)
    for task, metric in con.execute("SELECT DISTINCT task, metric FROM ingest_runs ORDER BY task").fetchall():
        ensure_task(con, task, metric)
    _insert_eval_sets(con, folder)
    _insert_runs_and_snapshots(con, folder)
    _insert_rows(con, folder)
    ingested = [name for (name,) in con.execute("SELECT external_id FROM ingest_runs ORDER BY ordinal").fetchall()]
    con.execute("DROP TABLE ingest_runs")
    con.execute("DROP TABLE ingest_ids")
    return ingested, already


def _drop_already_ingested(con) -> list[str]:
    """Runs the store got since phase 1 (a concurrent ingest): the same folder is skipped, anything
    else is the conflict phase 1 would have reported."""
    matches = con.execute(
        "SELECT DISTINCT s.ordinal, s.path, s.task, s.model, s.learning_rate, s.batch_size, s.seed, s.external_id "
        "FROM ingest_runs s JOIN run_table r ON r.task = s.task AND r.model = s.model "
        "AND (r.external_id = s.external_id OR (r.learning_rate = s.learning_rate AND r.batch_size = s.batch_size "
        "AND r.seed = s.seed)) ORDER BY s.ordinal").fetchall()
    already = []
    for ordinal, path, *identity, name in matches:
        # the staged row holds what the conflict check reads of the manifest (not read again)
        staged = dict(zip(("task", "model", "learning_rate", "batch_size", "seed"), identity), run_name=name)
        conflict = conflicts_with_store(con, staged, Path(path))
        if conflict:
            raise OfaError(conflict)
        already.append(name)
        con.execute("DELETE FROM ingest_runs WHERE ordinal = ?", [ordinal])
    return already


def _insert_eval_sets(con, folder: Path) -> None:
    """New evaluation sets in order of first appearance; a set staged or stored with another role is an error."""
    rows = con.execute(
        "SELECT task, dataset, language, split, role, arg_min(n_examples, ordinal) FROM read_parquet(?) "
        "WHERE ordinal IN (SELECT ordinal FROM ingest_runs) GROUP BY ALL ORDER BY min(ordinal), min(position)",
        [_staged(folder, "eval_sets")]).fetchall()
    for task, dataset, language, split, role, n_examples in rows:
        ensure_eval_set(con, task, dataset, language, split, role, n_examples)


def _insert_runs_and_snapshots(con, folder: Path) -> None:
    """Run and snapshot ids in folder order, as inserting run by run would give them."""
    n_runs = con.execute("SELECT count(*) FROM ingest_runs").fetchall()[0][0]
    first_run = _reserve_ids(con, "run_ids", n_runs)
    con.execute("CREATE TEMP TABLE ingest_ids AS SELECT ordinal, task, ? + row_number() OVER (ORDER BY ordinal) - 1 "
                "AS run_id FROM ingest_runs", [first_run])
    con.execute("INSERT INTO run_table (run_id, task, model, learning_rate, batch_size, seed, epochs, external_id, "
                "origin, path) SELECT i.run_id, s.task, s.model, s.learning_rate, s.batch_size, s.seed, s.epochs, "
                "s.external_id, 'ingest', s.path FROM ingest_runs s JOIN ingest_ids i USING (ordinal) ORDER BY i.run_id")
    snapshots = f"(SELECT s.* FROM read_parquet('{_quoted(folder, 'snapshots')}') s SEMI JOIN ingest_ids USING (ordinal))"
    n_snapshots = con.execute(f"SELECT count(*) FROM {snapshots}").fetchall()[0][0]
    first_snapshot = _reserve_ids(con, "snapshot_ids", n_snapshots)
    con.execute(
        "INSERT INTO snapshot_table (snapshot_id, run_id, snapshot_index, step, epoch, weights_path, weights_sha256, "
        f"weights_bytes) SELECT ? + row_number() OVER (ORDER BY s.ordinal, s.snapshot_index) - 1, i.run_id, "
        f"s.snapshot_index, s.step, s.epoch, s.weights_path, s.weights_sha256, s.weights_bytes FROM {snapshots} s "
        "JOIN ingest_ids i USING (ordinal)", [first_snapshot])


def _quoted(folder: Path, kind: str) -> str:
    return _staged(folder, kind).replace("'", "''")


# Every staged row's eval_set_id, by the run's task and the set's name
_EVAL_SET_JOIN = ("JOIN eval_set_table e ON e.task = i.task AND e.dataset = s.dataset AND e.language = s.language "
                  "AND e.split = s.split")


def _insert_rows(con, folder: Path) -> None:
    """Scores, example statistics, selection criteria and variant weights, straight from Parquet."""
    con.execute(
        "INSERT INTO score_table (run_id, variant, snapshot_id, eval_set_id, metric, value) "
        "SELECT CASE WHEN s.variant IS NULL THEN NULL ELSE i.run_id END, s.variant, sn.snapshot_id, e.eval_set_id, "
        "s.metric, s.value FROM read_parquet(?) s JOIN ingest_ids i USING (ordinal) " + _EVAL_SET_JOIN +
        " LEFT JOIN snapshot_table sn ON s.variant IS NULL AND sn.run_id = i.run_id "
        "AND sn.snapshot_index = s.snapshot_index", [_staged(folder, "scores")])
    con.execute(
        "INSERT INTO example_stat_table (run_id, variant, average_id, eval_set_id, statistic, examples_sha256, "
        "\"values\") SELECT i.run_id, s.variant, NULL, e.eval_set_id, s.statistic, s.examples_sha256, s.\"values\" "
        "FROM read_parquet(?) s JOIN ingest_ids i USING (ordinal) " + _EVAL_SET_JOIN, [_staged(folder, "example_stats")])
    con.execute("INSERT INTO selection_table SELECT i.run_id, 'trg-dev', 'target-dev', s.value "
                "FROM read_parquet(?) s JOIN ingest_ids i USING (ordinal)", [_staged(folder, "selection")])
    con.execute("INSERT INTO run_weight_table SELECT i.run_id, s.variant, s.weights_path, s.weights_sha256 "
                "FROM read_parquet(?) s JOIN ingest_ids i USING (ordinal)", [_staged(folder, "run_weights")])


# ---------------------------------------------------------------------------------------------
# The three phases


@dataclass
class IngestSummary:
    ingested: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    pending: list[tuple[Path, CheckedManifest]]
    summary: IngestSummary


def _plan(con, manifests: dict[Path, CheckedManifest]) -> _Plan:
    """Phase 1: which runs to ingest; a run the store holds from elsewhere is an error."""
    names, configurations = set(), set()
    for task, model, name, lr, bs, seed in con.execute(
            "SELECT task, model, external_id, learning_rate, batch_size, seed FROM run_table").fetchall():
        names.add((task, model, name))
        configurations.add((task, model, lr, bs, seed))
    plan = _Plan([], IngestSummary())
    for run_dir, manifest in manifests.items():
        fields = manifest.fields
        task, model, name = fields["task"], fields["model"], run_name(fields, run_dir)
        known = (task, model, name) in names or (
            task, model, float(fields["learning_rate"]), fields["batch_size"], fields["seed"]) in configurations
        conflict = conflicts_with_store(con, fields, run_dir) if known else None
        if conflict:
            raise OfaError(conflict)
        if fields["state"] != "complete":
            plan.summary.incomplete.append(name)
        elif known:
            plan.summary.already.append(name)
        else:
            plan.pending.append((run_dir, manifest))
    return plan


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ingest_runs(db_path: str, root: Path, progress: bool = False, workers: int | None = None) -> IngestSummary:
    """Ingest every complete, not yet ingested run under `root` into the store at `db_path`: scored
    with the store closed, inserted in one transaction under the write lock (module docstring)."""
    store = lambda: connected(db_path)  # noqa: E731 - opened for each short phase, never held between them
    db_path = Path(db_path)
    try:
        manifests = check_run_folders(root)
    except OfaError:
        with store():  # a writing command creates or migrates the store even when RUNS is refused
            pass
        raise
    with store() as con:
        plan = _plan(con, manifests)
    del manifests  # the pending runs' manifests travel in the plan
    if not plan.pending:
        return plan.summary
    staging = _staging_folder(db_path)
    try:
        _guarded(staging, stage_runs, plan.pending, staging, workers or default_workers(), progress)
        with store() as con:
            ingested, already = _guarded(db_path, _insert_in_transaction, con, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    plan.summary.ingested += ingested
    plan.summary.already += already
    return plan.summary


# DuckDB's buffer pool for the insert: by default it may take 80% of RAM and keeps what it read,
# so the parent's peak memory grew with the rows inserted; bounded, it evicts (or spills) instead.
# What must fit is a base plus the vectors DuckDB materialises of the widest per-example list
# (2,048 rows at a time); on one thread that is the same whatever the number of runs or cores.
INSERT_MEMORY_BASE_MB = 64
DUCKDB_VECTOR_ROWS = 2048


def insert_memory_limit_mb(widest_values: int) -> int:
    """The buffer pool's bound (MB, one thread) for inserting per-example lists of at most
    `widest_values` doubles: the base and two vectors of them. Measured on XNLI-sized lists
    (5,010): the insert fails with none over the base and passes from 0.8 of one."""
    return INSERT_MEMORY_BASE_MB + math.ceil(2 * DUCKDB_VECTOR_ROWS * 8 * widest_values / 2**20)


def _insert_in_transaction(con, staging: Path):
    widest = con.execute("SELECT coalesce(max(widest_values), 0) FROM read_parquet(?)",
                         [_staged(staging, "runs")]).fetchall()[0][0]
    con.execute(f"SET memory_limit = '{insert_memory_limit_mb(widest)}MB'")
    con.execute("SET threads = 1")
    try:
        with transaction(con):
            return insert_staged(con, staging)
    except Exception as error:
        if not _out_of_memory(error):
            raise
        # the bound was too tight after all (DuckDB's needs vary by version and data): the
        # transaction rolled back; insert again under DuckDB's own limits
        con.execute("RESET memory_limit")
        con.execute("RESET threads")
        with transaction(con):
            return insert_staged(con, staging)


def _out_of_memory(error: Exception) -> bool:
    """A statement out of memory, or a COMMIT that could not pin a block (a TransactionException
    whose message carries DuckDB's advice to raise memory_limit)."""
    import duckdb

    return isinstance(error, duckdb.OutOfMemoryException) or (
        isinstance(error, duckdb.TransactionException) and "memory_limit" in str(error))


def _guarded(path: Path, function, *args):
    """`function(*args)`, with a full disk turned into one line naming `path`."""
    import duckdb

    try:
        return function(*args)
    except (OSError, duckdb.Error) as error:
        if is_disk_full(error):
            raise disk_full_error(path, error) from None
        raise


def _staging_folder(db_path: Path) -> Path:
    """A temporary folder beside the store, named after this process (`ofa_eval.common.tempfiles`),
    after sweeping those of ingests that died on this host."""
    db_path = Path(db_path).resolve()
    remove_orphans(db_path.parent)
    folder = temporary_path(db_path.parent / f"{db_path.name}.ingest")
    try:
        folder.mkdir(parents=True)
    except OSError as error:
        raise OfaError(f"{folder}: cannot make the staging folder ({error.strerror or error})") from None
    return folder


# ---------------------------------------------------------------------------------------------
# Rows of averaged models (ofa_eval.averages.materialize)


def example_stat_rows(subject: tuple, eval_set_id: int, example_stats: ExampleStats) -> list[tuple]:
    """example_stat_table rows of one subject, (run_id, variant, average_id), on one set."""
    return [(*subject, eval_set_id, name, example_stats.examples_sha256, np.asarray(values, dtype=np.float64))
            for name, values in example_stats.stats.items()]


def insert_example_stats(con, rows: list[tuple]) -> None:
    """Insert example_stat_table rows in one bulk insert from Arrow."""
    if not rows:
        return
    columns = list(zip(*rows))
    schema = STAGED["example_stats"]
    table = pa.table({
        "run_id": pa.array(columns[0], pa.int64()), "variant": pa.array(columns[1], pa.string()),
        "average_id": pa.array(columns[2], pa.int64()), "eval_set_id": pa.array(columns[3], pa.int64()),
        "statistic": pa.array(columns[4], pa.string()), "examples_sha256": pa.array(columns[5], pa.string()),
        "values": _list_array(list(columns[6])).cast(schema.field("values").type)})
    con.register("incoming_example_stats", table)
    try:
        con.execute("INSERT INTO example_stat_table SELECT * FROM incoming_example_stats")
    finally:
        con.unregister("incoming_example_stats")
