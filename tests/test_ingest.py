"""`ofa-eval ingest` on synthetic run folders, checked against hand-computed scores."""

import csv
import io
import statistics

import pytest

from synthetic_runs import SUBJECTS, write_grid, write_run


def accuracy(pair):
    gold, predicted = pair
    return 100.0 * sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def expected_variants(truth):
    """Plain Python: LAST, SRC-DEV, CA and TRG-DEV target test scores and the target-dev criterion."""
    snapshots = SUBJECTS[:10]
    source = [accuracy(truth[(s, "xnli", "en", "validation")]) for s in snapshots]
    src_dev = snapshots[source.index(max(source))]
    result = {}
    for variant, subject in (("last", snapshots[-1]), ("src-dev", src_dev), ("ca", "ca")):
        result[variant] = statistics.mean(accuracy(truth[(subject, "xnli", lang, "test")]) for lang in ("de", "sw"))
        result[f"{variant} source-dev"] = accuracy(truth[(subject, "xnli", "en", "validation")])
    trg, best_dev = [], []
    for lang in ("de", "sw"):
        dev = [accuracy(truth[(s, "xnli", lang, "validation")]) for s in snapshots]
        best_dev.append(max(dev))
        trg.append(accuracy(truth[(snapshots[dev.index(max(dev))], "xnli", lang, "test")]))
    result["trg-dev"] = statistics.mean(trg)
    result["target-dev"] = statistics.mean(best_dev)
    return result


@pytest.fixture
def grid(tmp_path):
    return write_grid(tmp_path / "runs")


def test_ingest_scores_and_variants(cli, grid, tmp_path):
    result = cli("ingest", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert "12 run(s) ingested" in result.stdout
    rows = cli("sql", "SELECT r.external_id, v.variant, v.target_test FROM run_variants v JOIN runs r USING (run_id)",
               "--format", "csv").stdout
    stored = {(r["external_id"], r["variant"]): float(r["target_test"]) for r in csv.DictReader(io.StringIO(rows))}
    criteria = cli("sql", "SELECT r.external_id, s.value FROM selection_scores s JOIN runs r USING (run_id)",
                   "--format", "csv").stdout
    target_dev = {r["external_id"]: float(r["value"]) for r in csv.DictReader(io.StringIO(criteria))}
    for name, (_, truth) in grid.items():
        want = expected_variants(truth)
        for variant in ("last", "src-dev", "ca", "trg-dev"):
            assert stored[(name, variant)] == pytest.approx(want[variant], abs=1e-9), (name, variant)
        assert target_dev[name] == pytest.approx(want["target-dev"], abs=1e-9)
    snapshot = cli("sql", "SELECT count(*) AS n, count(DISTINCT weights_sha256) AS hashes FROM snapshots",
                   "--format", "csv").stdout
    assert snapshot.split() == ["n,hashes", "120,10"]  # the ten snapshot contents repeat across runs


def test_protocol_on_ingested_runs_matches_brute_force(cli, grid, tmp_path):
    cli("ingest", tmp_path / "runs", "--quiet")
    result = cli("protocol", "--strategy", "max-src-dev", "--strategy", "max-trg-dev", "--draws", 4,
                 "--seed", 9, "-R", 3, "--format", "csv")
    assert result.exit_code == 0, result.output
    from ofa_eval.evaluation import load_pool, sample_draws
    from ofa_eval.store.database import connected

    with connected(str(cli.db)) as con:
        pool = load_pool(con, "nli", "synthetic-model")
        draws = sample_draws(pool, 4, 3, seed=9)
    truths = {name: expected_variants(truth) for name, (_, truth) in grid.items()}
    for row in csv.DictReader(io.StringIO(result.stdout)):
        variant, r = row["variant"], int(row["runs"])
        key = "target-dev" if variant == "trg-dev" else f"{variant} source-dev"
        values = []
        for runs in draws.runs:
            names = [pool.external_id[run_id] for run_id in runs[:r]]
            best = names[0]
            for name in names[1:]:
                if truths[name][key] > truths[best][key]:
                    best = name
            values.append(truths[best][variant])
        assert float(row["mean"]) == pytest.approx(statistics.mean(values), abs=1e-5)


def test_ingest_is_idempotent_and_skips_incomplete_runs(cli, grid, tmp_path):
    write_run(tmp_path / "runs", "unfinished", 1e-5, 16, 7, state="running")
    first = cli("ingest", tmp_path / "runs", "--quiet")
    assert "12 run(s) ingested, 0 already in the store, 1 incomplete" in first.stdout
    assert "skipped incomplete run unfinished" in first.stderr
    count = "SELECT (SELECT count(*) FROM scores) || '/' || (SELECT count(*) FROM runs)"
    before = cli("sql", count, "--format", "csv").stdout
    second = cli("ingest", tmp_path / "runs", "--quiet")
    assert "0 run(s) ingested, 12 already in the store" in second.stdout
    assert cli("sql", count, "--format", "csv").stdout == before


@pytest.mark.parametrize("damage,fragment", [
    ("truncate-weights", "snapshot-03.safetensors: truncated safetensors file"),
    ("corrupt-predictions", "predictions/snapshot-05/xnli__de__test.parquet: not a readable Parquet file"),
    ("missing-predictions", "predictions/ca/xnli__sw__test.parquet: file not found"),
    ("bad-manifest", "manifest.json: not a readable JSON manifest"),
])
def test_corrupt_input_leaves_the_store_as_it_was(cli, tmp_path, damage, fragment):
    runs = tmp_path / "runs"
    write_run(runs, "good", 1e-5, 16, 1)
    assert cli("ingest", runs, "--quiet").exit_code == 0
    write_run(runs, "fine-too", 2e-5, 16, 1)
    bad = runs / "zz-bad"
    write_run(runs, "zz-bad", 3e-5, 16, 1)
    if damage == "truncate-weights":
        path = bad / "weights/snapshot-03.safetensors"
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "corrupt-predictions":
        (bad / "predictions/snapshot-05/xnli__de__test.parquet").write_bytes(b"garbage")
    elif damage == "missing-predictions":
        (bad / "predictions/ca/xnli__sw__test.parquet").unlink()
    else:
        (bad / "manifest.json").write_text("{not json")
    before = cli("sql", "SELECT count(*) FROM scores", "--format", "csv").stdout
    result = cli("ingest", runs, "--quiet")
    assert result.exit_code == 2
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cli("sql", "SELECT count(*) FROM scores", "--format", "csv").stdout == before
    assert "fine-too" not in cli("sql", "SELECT external_id FROM runs", "--format", "csv").stdout


def _record_insert_settings(monkeypatch):
    """Wrap insert_staged: the (memory_limit, threads) each attempt ran under, and its outcome."""
    from ofa_eval.artifacts import ingest

    attempts = []
    real_insert_staged = ingest.insert_staged

    def recorded(con, folder):
        settings = con.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
        try:
            result = real_insert_staged(con, folder)
        except Exception as error:
            attempts.append((*settings, type(error).__name__))
            raise
        attempts.append((*settings, "ok"))
        return result

    monkeypatch.setattr(ingest, "insert_staged", recorded)
    return attempts


def test_the_insert_is_bounded_by_the_widest_per_example_list_on_one_thread(cli, grid, tmp_path, monkeypatch):
    attempts = _record_insert_settings(monkeypatch)
    assert cli("ingest", tmp_path / "runs", "--quiet").exit_code == 0
    widest = max(len(gold) for _, truth in grid.values() for gold, _ in truth.values())
    # 64 MB and two DuckDB vectors (2,048 rows) of the widest list's doubles, in MiB rounded up
    bound_mib = 64 + -(-2 * 2048 * 8 * widest // 2**20)
    assert len(attempts) == 1
    limit, threads, outcome = attempts[0]
    assert (threads, outcome) == (1, "ok")
    assert limit.endswith("MiB") and float(limit.split()[0]) == pytest.approx(bound_mib * 10**6 / 2**20, abs=0.1)


def test_an_insert_out_of_memory_rolls_back_and_inserts_again_unbounded(cli, grid, tmp_path, monkeypatch):
    """A bound too tight for the rows (here 2 MB): DuckDB runs out of memory after inserting part
    of them, the transaction rolls back, and the second attempt (DuckDB's own limits) stores every
    run once."""
    import duckdb

    from ofa_eval.artifacts import ingest

    monkeypatch.setattr(ingest, "INSERT_MEMORY_BASE_MB", 0)
    attempts = _record_insert_settings(monkeypatch)
    result = cli("ingest", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert [outcome for *_, outcome in attempts] == ["OutOfMemoryException", "ok"]
    assert attempts[0][:2] != attempts[1][:2]  # bounded on one thread, then DuckDB's defaults
    stored = cli("sql", "SELECT count(*) AS runs, count(DISTINCT external_id) AS names FROM runs", "--format", "csv")
    assert stored.stdout.split() == ["runs,names", f"{len(grid)},{len(grid)}"]
    scores = cli("sql", "SELECT count(*) FROM score_table", "--format", "csv").stdout.split()[1]
    assert int(scores) == len(set(tuple(r) for r in duckdb.connect(str(cli.db), read_only=True).execute(
        "SELECT run_id, variant, snapshot_id, eval_set_id, metric FROM score_table").fetchall()))


def test_a_commit_that_cannot_pin_a_block_counts_as_out_of_memory():
    """DuckDB reports memory at COMMIT as a TransactionException (seen inserting XNLI-sized lists
    under 64 MB); other transaction errors are not retried."""
    import duckdb

    from ofa_eval.artifacts.ingest import _out_of_memory

    at_commit = duckdb.TransactionException(
        "TransactionContext Error: Failed to commit: failed to pin block of size 256.0 KiB (61.0 MiB/61.0 MiB used)"
        "\n\nPossible solutions:\n* Reducing the number of threads (SET threads=X)\n* Increasing the memory limit "
        "(SET memory_limit='...GB')")
    assert _out_of_memory(at_commit)
    assert not _out_of_memory(duckdb.TransactionException("TransactionContext Error: Conflict on update"))
    assert not _out_of_memory(duckdb.ConstraintException("Duplicate key"))


def test_staging_workers_read_with_one_polars_thread_unless_the_user_chose(monkeypatch):
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from ofa_eval.artifacts.ingest import _one_polars_thread_per_worker

    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    with _one_polars_thread_per_worker(), \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        import polars

        assert pool.submit(polars.thread_pool_size).result() == 1
    assert "POLARS_MAX_THREADS" not in os.environ
    monkeypatch.setenv("POLARS_MAX_THREADS", "3")
    with _one_polars_thread_per_worker():
        assert os.environ["POLARS_MAX_THREADS"] == "3"
    assert os.environ["POLARS_MAX_THREADS"] == "3"
