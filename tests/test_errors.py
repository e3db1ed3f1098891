"""Bad input: a one-line error, exit code 2, and nothing in the store changes."""

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from synthetic_release import write_release

COUNTS = " UNION ALL ".join(
    f"SELECT '{t}' AS t, count(*) AS n FROM {t}"
    for t in ["run_table", "score_table", "average_table", "draw_table", "protocol_result_table"])


@pytest.fixture
def store(synthetic_store):
    return synthetic_store


def counts(cli):
    return cli("sql", COUNTS, "--format", "csv").stdout


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]


@pytest.mark.parametrize("args,fragment", [
    (["--task", "pos"], "unknown task 'pos'"),
    (["--model", "gpt"], "unknown model 'gpt'"),
    (["--strategy", "best"], "unknown strategy 'best'"),
    (["--variant", "first"], "unknown variant 'first'"),
    (["--strategy", "max-trg-dev", "--variant", "last"], "no strategy among max-trg-dev takes variant(s) last"),
    (["--strategy", "max-src-dev", "--draws", "10", "-R", "7"], "--max-runs 7 exceeds the 6 distinct"),
    (["--strategy", "max-src-dev", "--replay", "-R", "5"], "--max-runs 5 exceeds recorded draw"),
    (["--strategy", "max-src-dev", "--replay", "-R", "5"], "pass --max-runs 4 or less"),
    (["--strategy", "max-src-dev", "--replay", "--exclude-draw", "9"], "no recorded draw '9'"),
    (["--strategy", "max-src-dev", "--exclude-draw", "1"], "add --replay"),
])
def test_bad_protocol_arguments(store, args, fragment):
    before = counts(store)
    assert_one_line_error(store("protocol", "--task", "nli", *args) if "--task" not in args
                          else store("protocol", *args), fragment)
    assert counts(store) == before


def test_missing_and_empty_store(cli, tmp_path):
    assert_one_line_error(cli("protocol"), "no store here")
    assert_one_line_error(cli("sql", "SELECT 1"), "no store here")
    empty = tmp_path / "release"
    empty.mkdir()
    assert_one_line_error(cli("import", "ofa-xlt", empty), "nli_zs.parquet: file not found")
    assert_one_line_error(cli("protocol"), "the store has no runs")


@pytest.mark.parametrize("damage", ["missing", "corrupt", "column"])
def test_failed_import_leaves_the_store_untouched(store, tmp_path, damage):
    other = tmp_path / "other"
    other.mkdir()
    write_release(other, model="second-model", seed=5, drop="ner_ra" if damage == "missing" else None)
    if damage == "corrupt":
        (other / "ner_ra.parquet").write_bytes(b"PAR1 this is not parquet")
    if damage == "column":
        import polars as pl

        pl.read_parquet(other / "ner_zs.parquet").drop("validation_oracle").write_parquet(other / "ner_zs.parquet")
    before = counts(store)
    assert_one_line_error(store("import", "ofa-xlt", other), "ner_")
    assert counts(store) == before


def test_sql_is_read_only(store):
    before = counts(store)
    assert_one_line_error(store("sql", "DELETE FROM run_table"), "read-only")
    assert_one_line_error(store("sql", "CREATE TABLE x (a INT)"), "read-only")
    assert counts(store) == before
    assert store("sql", "SELECT count(*) AS n FROM runs", "--format", "csv").stdout.strip() == "n\n36"


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("statement", [
    "INSERT INTO run_table (run_id) VALUES (999)", "UPDATE run_table SET seed = 1", "CREATE TABLE x (a INT)",
    "CREATE TEMP TABLE x AS SELECT 1", "DROP VIEW runs", "ATTACH '{tmp}/other.duckdb' AS other",
    "ATTACH '{db}' AS again", "COPY run_table FROM '{tmp}/runs.csv'", "CHECKPOINT", "PRAGMA force_checkpoint",
    "SET threads = 1", "PRAGMA enable_checkpoint_on_shutdown", "VACUUM", "SELECT 1; DELETE FROM run_table",
    "INSTALL httpfs"])
def test_sql_refuses_every_statement_that_could_write(store, tmp_path, statement):
    (tmp_path / "runs.csv").write_text("run_id\n999\n")
    before = sha256_of(store.db)
    result = store("sql", statement.format(tmp=tmp_path, db=store.db))
    assert_one_line_error(result, "sql is read-only")
    assert sha256_of(store.db) == before
    assert not (tmp_path / "other.duckdb").exists()


@pytest.mark.parametrize("statement", [
    "COPY runs TO '{out}'", "COPY (SELECT 1 AS a) TO '{out}' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{out}'", "EXPORT DATABASE '{tmp}/dump'",
    "COPY (SELECT 1 AS a) TO '{db}'"])
def test_sql_writes_no_files(store, tmp_path, statement):
    out = tmp_path / "export.csv"
    before = sha256_of(store.db)
    result = store("sql", statement.format(out=out, tmp=tmp_path, db=store.db))
    assert_one_line_error(result, "writes no files: ")
    assert "redirect" in result.stderr
    assert sha256_of(store.db) == before and not out.exists() and not (tmp_path / "dump").exists()


def test_sql_reads_local_files_and_leaves_the_store_as_it_was(store, tmp_path):
    (tmp_path / "extra.csv").write_text("run,note\n1,kept\n2,seen\n")
    pl.DataFrame({"x": [1.5, 2.5]}).write_parquet(tmp_path / "extra.parquet")
    before = sha256_of(store.db)
    csv_rows = store("sql", f"SELECT note FROM read_csv('{tmp_path}/extra.csv') ORDER BY run", "--format", "csv")
    parquet_sum = store("sql", f"SELECT sum(x) AS s FROM read_parquet('{tmp_path}/extra.parquet')", "--format", "csv")
    explained = store("sql", "EXPLAIN SELECT count(*) FROM runs")
    assert csv_rows.stdout.split() == ["note", "kept", "seen"]
    assert parquet_sum.stdout.split() == ["s", "4.0"]
    assert explained.exit_code == 0 and "physical_plan" in explained.stdout
    assert sha256_of(store.db) == before


def test_locked_store(store):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(store.db)!r})
            print("locked", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_one_line_error(store("--lock-timeout", "1", "protocol", "--task", "nli", "--strategy", "max-src-dev",
                                    "-R", "2"), "locked by another process")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("content,fragment", [
    ("task,model,strategy\nnli,m,max-src-dev\n", "missing column(s) variant"),
    ("task,model,strategy,variant,runs,mean,std,draws\nnli,tiny-model,max-src-dev,src-dev,two,1,,\n",
     "bad.csv:2: column 'runs' is not a number"),
    ("task,model,strategy,variant,runs,mean,std,draws\nnli,tiny-model,soup,ca,1,1,,\n",
     "bad.csv:2: unknown strategy/variant soup/ca"),
    ("task,model,strategy,variant,runs,mean,std,draws\n", "no rows"),
])
def test_malformed_benchmark_table(store, tmp_path, content, fragment):
    table = tmp_path / "bad.csv"
    table.write_text(content)
    assert_one_line_error(store("check", table), fragment)


def test_newer_schema_is_refused(store):
    import duckdb

    con = duckdb.connect(str(store.db))
    con.execute("UPDATE store_info SET value = '99' WHERE key = 'schema_version'")
    con.close()
    assert_one_line_error(store("protocol"), "schema version 99 is newer")


def test_a_version_1_store_is_migrated_by_a_writing_command_only(cli, tmp_path):
    from importlib import resources

    import duckdb

    from ofa_eval.store.database import SCHEMA_VERSION

    con = duckdb.connect(str(cli.db))
    con.execute(resources.files("ofa_eval.store").joinpath("schema.sql").read_text())  # a version-1 store
    con.execute("INSERT INTO store_info VALUES ('schema_version', '1'), ('created_by', 'ofa-eval')")
    con.close()
    assert_one_line_error(cli("sql", "SELECT 1"), f"store schema version 1 is older than this ofa-eval's ({SCHEMA_VERSION})")
    assert cli("ingest", tmp_path / "empty-runs-folder").exit_code in (0, 2)  # opens the store writable
    version = cli("sql", "SELECT value FROM store_info WHERE key = 'schema_version'", "--format", "csv")
    version = version.stdout
    assert version.split() == ["value", str(SCHEMA_VERSION)]
    assert cli("sql", "SELECT count(*) AS n FROM example_stats", "--format", "csv").stdout.split() == ["n", "0"]


def test_soup_k_below_one_is_refused_by_the_command_and_the_api(store):
    import ofa_eval
    from ofa_eval.common.errors import OfaError

    assert_one_line_error(store("protocol", "--task", "nli", "--soup-k", "0"), "--soup-k")
    with pytest.raises(OfaError, match="--soup-k must be at least 1"):
        ofa_eval.protocol(store.db, task="nli", soup_k=0)
