"""`ofa-eval ingest` against kills, readers and other writers, in real subprocesses.

The reference for every store state is a store that one uninterrupted ingest of the same run
folders made: a killed ingest must leave exactly the state before it or that one.
"""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import pytest

from synthetic_runs import write_grid, write_run

VIEWS = ("runs", "snapshots", "eval_sets", "scores", "example_stats", "selection_scores", "run_weights")
CLI = "import sys; from ofa_eval.cli import main; sys.exit(main(prog_name='ofa-eval'))"


def ofa_eval(*args, **popen):
    """`ofa-eval ARGS` in a new process (and process group, so that a kill reaches its workers)."""
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)


def finished(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def dump(db):
    """Every public view's rows, sorted: the store's state as a user sees it."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {view: sorted(con.execute(f"SELECT * FROM {view}").fetchall(), key=repr) for view in VIEWS}
    finally:
        con.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """24 NLI runs: enough that scoring takes a few seconds."""
    root = tmp_path_factory.mktemp("concurrency") / "runs"
    write_grid(root)
    for lr in (4e-5, 5e-5):
        for bs in (16, 32):
            for seed in (1, 2, 3):
                write_run(root, f"nli-lr{lr}-bs{bs}-seed{seed}", lr, bs, seed)
    return root


@pytest.fixture(scope="module")
def states(runs, tmp_path_factory):
    """(an empty store, its dump, the dump after one complete ingest of `runs`)."""
    folder = tmp_path_factory.mktemp("states")
    empty = folder / "empty.duckdb"
    assert finished(ofa_eval("--db", empty, "ingest", folder, "--quiet"))[0] == 0  # no runs: just the store
    full = folder / "full.duckdb"
    shutil.copy(empty, full)
    code, stdout, stderr = finished(ofa_eval("--db", full, "ingest", runs, "--quiet"))
    assert code == 0 and "24 run(s) ingested" in stdout, stderr
    return empty, dump(empty), dump(full)


def staging_folders(db):
    return sorted(db.parent.glob(f".{db.name}.ingest.tmp-*"))


def test_a_killed_ingest_leaves_the_store_before_or_after(runs, states, tmp_path):
    empty, before, after = states
    rng = random.Random(20240611)
    seen = set()
    for attempt in range(5):
        db = tmp_path / f"killed-{attempt}.duckdb"
        shutil.copy(empty, db)
        process = ofa_eval("--db", db, "ingest", runs, "--quiet", "--workers", 2)
        time.sleep(rng.uniform(0.3, 6.0))
        with contextlib.suppress(ProcessLookupError):  # it may have finished already
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        state = dump(db)
        assert state in (before, after), f"attempt {attempt}: a partial store"
        seen.add("after" if state == after else "before")
        code, stdout, stderr = finished(ofa_eval("--db", db, "ingest", runs, "--quiet"))
        assert code == 0, stderr
        assert dump(db) == after
        assert staging_folders(db) == []  # the dead ingest's staging folder is swept
    assert "before" in seen  # the kills landed while work was still to do


def test_a_reader_during_an_ingest_succeeds(runs, states, tmp_path):
    empty, _, after = states
    db = tmp_path / "store.duckdb"
    shutil.copy(empty, db)
    writer = ofa_eval("--db", db, "ingest", runs, "--quiet", "--workers", 1)
    deadline = time.monotonic() + 120
    while not staging_folders(db) and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.poll() is None, "the ingest ended before it started scoring"
    reader = ofa_eval("--db", db, "--lock-timeout", 120, "sql", "SELECT count(*) AS n FROM runs", "--format", "csv")
    code, stdout, stderr = finished(reader)
    assert code == 0, stderr
    assert stdout.split() in (["n", "0"], ["n", "24"])
    code, stdout, stderr = finished(writer)
    assert code == 0 and "24 run(s) ingested" in stdout, stderr
    assert dump(db) == after


def test_two_ingests_creating_one_store(runs, states, tmp_path):
    _, _, after = states
    db = tmp_path / "new.duckdb"
    first, second = (ofa_eval("--db", db, "--lock-timeout", 120, "ingest", runs, "--quiet") for _ in range(2))
    results = [finished(first), finished(second)]
    for code, stdout, stderr in results:
        assert "not a valid DuckDB database file" not in stderr
        assert code == 0, stderr
    ingested = sorted(stdout.split(" run(s)")[0] for _, stdout, _ in results)
    assert ingested == ["0", "24"], results  # the loser found every run already in the store
    assert dump(db) == after
    assert not list(tmp_path.glob("new.duckdb.new-*"))


def test_a_locked_store_names_its_holder_after_the_lock_timeout(states, tmp_path):
    empty, _, _ = states
    db = tmp_path / "held.duckdb"
    shutil.copy(empty, db)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(db)!r})
        print("holding", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        from ofa_eval.store.database import DEFAULT_LOCK_TIMEOUT

        started = time.monotonic()
        code, _, stderr = finished(ofa_eval("--db", db, "--lock-timeout", 1, "sql", "SELECT 1"))
        waited = time.monotonic() - started
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1, stderr
        assert "locked by another process" in lines[0] and f"PID {holder.pid}" in lines[0], lines[0]
        assert "after 1 s" in lines[0]
        assert waited < DEFAULT_LOCK_TIMEOUT  # the option, not the default, bounded the wait
    finally:
        holder.kill()
        holder.wait()


def _file_size_limit(limit):
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_is_one_line_and_the_store_keeps_its_state(runs, states, tmp_path):
    """A file size limit stands in for a full disk: the store's writes fail as they would (EFBIG, not ENOSPC)."""
    empty, before, after = states
    db = tmp_path / "full-disk.duckdb"
    shutil.copy(empty, db)
    process = ofa_eval("--db", db, "ingest", runs, "--quiet", preexec_fn=_file_size_limit(db.stat().st_size + 4096))
    code, _, stderr = finished(process)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {db}") and "while writing" in lines[0], lines[0]
    assert dump(db) == before
    assert staging_folders(db) == []
