"""Every `ofa-eval` command on bad inputs: a one-line error (exit 2) or a reported failure (exit 1),
never a traceback.

Bad stores (missing, not a store, garbage, a directory, empty, a newer schema, locked by another
process) for every command that opens one; bad files and options for every command. Commands that
train (train, quickstart, materialize, average) only get inputs that fail before anything trains.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from synthetic_release import write_release
from synthetic_runs import write_grid, write_run

VALID_TABLE = "task,model,strategy,variant,runs,mean,std,draws\nnli,tiny-model,max-src-dev,src-dev,1,60,,\n"


def run_cli(db: Path, *args):
    from ofa_eval.cli import main

    # no waiting for the locked store here: tests/test_ingest_concurrency.py tests the wait
    return CliRunner().invoke(main, ["--db", str(db), "--lock-timeout", "0", *map(str, args)], catch_exceptions=True)


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """Bad inputs and good stores, side by side."""
    import duckdb
    import numpy as np
    from safetensors.numpy import save_file

    base = tmp_path_factory.mktemp("bad-inputs")
    (base / "release").mkdir()
    write_release(base / "release")
    assert run_cli(base / "release.duckdb", "import", "ofa-xlt", base / "release").exit_code == 0
    write_grid(base / "runs")
    (base / "directory").mkdir()
    (base / "empty-folder").mkdir()
    (base / "file.txt").write_text("just text\n")
    (base / "not-a-store.duckdb").write_text("hello, not a store\n")
    (base / "garbage.duckdb").write_bytes(random.Random(0).randbytes(5000))
    shutil.copy(base / "release.duckdb", base / "newer.duckdb")
    con = duckdb.connect(str(base / "newer.duckdb"))
    con.execute("UPDATE store_info SET value = '99' WHERE key = 'schema_version'")
    con.close()
    shutil.copy(base / "release.duckdb", base / "locked.duckdb")
    run_cli(base / "empty.duckdb", "ingest", base / "empty-folder")  # a store without runs
    (base / "valid.csv").write_text(VALID_TABLE)
    (base / "binary.csv").write_bytes(b"\x00\x01\x02binary\xff\xfe\n,,,\n")
    (base / "empty.csv").write_text("")
    (base / "header-only.csv").write_text(VALID_TABLE.splitlines()[0] + "\n")
    (base / "words.csv").write_text(VALID_TABLE.replace(",1,60,", ",one,sixty,"))
    (base / "unknown-task.csv").write_text(VALID_TABLE.replace("nli,", "pos,"))
    (base / "nan-mean.csv").write_text(VALID_TABLE.replace(",1,60,", ",1,nan,"))
    (base / "no-runs-column.csv").write_text("task,model,strategy,variant,mean\nnli,tiny-model,max-src-dev,src-dev,60\n")
    save_file({"a": np.zeros(3, np.float32)}, str(base / "a.safetensors"))
    save_file({"b": np.zeros(3, np.float32)}, str(base / "b.safetensors"))
    save_file({"a": np.zeros(4, np.float32)}, str(base / "a4.safetensors"))
    (base / "header-overflow.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    (base / "pickle.safetensors").write_bytes(b"\x80\x04\x95garbage")
    (base / "not-toml.toml").write_text("this is [not toml")
    (base / "no-tasks.toml").write_text("model = 3\n")
    (base / "text-learning-rate.toml").write_text(
        'model = "m"\nmodel_name_or_path = "./nomodel"\nlearning_rates = ["x"]\nbatch_sizes = [8]\nseeds = [1]\n'
        '[nli]\ndata = { directory = "nodata", dataset = "x" }\n')
    (base / "no-data.toml").write_text(
        'model = "m"\nmodel_name_or_path = "./nomodel"\nlearning_rates = [1e-3]\nbatch_sizes = [8]\nseeds = [1]\n'
        '[nli]\ndata = { directory = "nodata", dataset = "x" }\n')
    write_run(base / "damaged-runs", "bad", 1e-5, 16, 1)
    (base / "damaged-runs" / "bad" / "weights" / "ca.safetensors").write_bytes(b"\xff" * 8)
    return base


@pytest.fixture(scope="module")
def locked(place):
    """The store `locked.duckdb`, held open for writing by another process while the module runs."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(place / 'locked.duckdb')!r})
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield place / "locked.duckdb"
    holder.kill()
    holder.wait()


def assert_clean_failure(result) -> None:
    """Exit 1 or 2, no traceback, no exception but the exit; exit 2 says `error:` on one line."""
    output = result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in output, output
    assert result.exit_code in (1, 2), output
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error: ")]
        assert len(errors) == 1, result.stderr  # ours ("error: <file>: <problem>") or click's usage error


# --- every command that opens a store, on every kind of bad store ---------------------------------------

STORE_COMMANDS = {
    "protocol": ["protocol"],
    "correlate": ["correlate"],
    "compare": ["compare", "accumulative:ca", "max-src-dev:src-dev"],
    "report": ["report", "{place}/report-out"],
    "grid": ["grid", "--task", "nli", "--model", "tiny-model"],
    "sql": ["sql", "SELECT count(*) FROM runs"],
    "check": ["check", "{place}/valid.csv"],
    "materialize": ["materialize"],
    "ingest": ["ingest", "{place}/runs", "--quiet"],
    "import": ["import", "ofa-xlt", "{place}/release"],
}
BAD_STORES = ["missing.duckdb", "not-a-store.duckdb", "garbage.duckdb", "directory", "empty.duckdb", "newer.duckdb",
              "locked.duckdb"]
# where the command does its job: ingest and import create or fill a store; every view of an empty store exists
WORKS = {("ingest", "missing.duckdb"), ("ingest", "empty.duckdb"), ("import", "missing.duckdb"),
         ("import", "empty.duckdb"), ("sql", "empty.duckdb")}


def expand(args: list[str], place: Path) -> list[str]:
    return [arg.format(place=place) for arg in args]


@pytest.mark.parametrize("store", BAD_STORES)
@pytest.mark.parametrize("command", sorted(STORE_COMMANDS))
def test_bad_store(place, locked, tmp_path, command, store):
    if (command, store) in WORKS:
        pytest.skip("not a bad input for this command")
    db = place / store
    if store in ("missing.duckdb", "empty.duckdb"):  # a failed command must not leave a store behind to the next one
        db = tmp_path / store
        if store == "empty.duckdb":
            shutil.copy(place / store, db)
    assert_clean_failure(run_cli(db, *expand(STORE_COMMANDS[command], place)))


# --- bad files and options, on a good store --------------------------------------------------------------

BAD_ARGUMENTS = [
    ["protocol", "--ci", "150"], ["protocol", "--ci", "0"], ["protocol", "--ci", "-5"], ["protocol", "--ci", "nan"],
    ["protocol", "--draws", "0"], ["protocol", "--draws", "-1"], ["protocol", "-R", "0"], ["protocol", "-R", "-2"],
    ["protocol", "--soup-k", "0"], ["protocol", "--ci", "95", "--bootstrap", "0"], ["protocol", "--task", "nope"],
    ["protocol", "--model", "nope"], ["protocol", "--strategy", "nope"], ["protocol", "--variant", "nope"],
    ["protocol", "--exclude-draw", "1"], ["protocol", "--replay", "--exclude-draw", "zzz"],
    ["protocol", "--resample", "draws+examples"], ["protocol", "--ci", "95", "--resample", "draws+examples"],
    ["protocol", "--format", "nope"], ["protocol", "--exact", "--strategy", "accumulative"],
    ["protocol", "--seed", "-1"],
    ["protocol", "--exact", "-R", "0"],
    ["protocol", "--ci", "95", "--task", "nli", "-R", "1", "--draws", "1"],
    ["correlate", "--ci", "150"], ["correlate", "--bootstrap", "0"], ["correlate", "--draws", "0"],
    ["correlate", "--task", "nope"], ["correlate", "--analysis", "nope"],
    ["correlate", "-R", "0"], ["correlate", "--seed", "-1"],
    ["compare", "a", "b"], ["compare", "nope:ca", "max-src-dev:src-dev"],
    ["compare", "accumulative:ca", "max-src-dev:src-dev", "--ci", "150"],
    ["compare", "accumulative:ca", "max-src-dev:src-dev", "--bootstrap", "0"],
    ["compare", "accumulative:ca", "max-src-dev:src-dev", "--draws", "0"],
    ["compare", "max-src-dev:src-dev", "max-trg-dev:trg-dev", "--resample", "draws+examples"],
    ["compare", "max-src-dev:src-dev", "max-trg-dev:trg-dev", "-R", "0"],
    ["compare", "max-src-dev:src-dev", "max-trg-dev:trg-dev", "--seed", "-1"],
    ["report", "{place}/file.txt"], ["report", "{place}/report-ci", "--ci", "150"],
    ["report", "{place}/report-draws", "--draws", "0"], ["report", "{place}/report-task", "--task", "nope"],
    ["report", "{place}/report-r", "-R", "0"],
    ["report", "{place}/report-seed", "--seed", "-1"],
    ["report", "{place}/file.txt/report"],
    ["grid", "--task", "nope", "--model", "nope"], ["grid", "--task", "nli"], ["grid", "--format", "nope"],
    ["sql", "SELEC garbage"], ["sql", "DELETE FROM run_table"], ["sql", "ATTACH '{place}/x.db'"],
    ["sql", "--format", "nope", "SELECT 1"],
    ["sql", ""],
    ["check", "{place}/missing.csv"], ["check", "{place}/directory"], ["check", "{place}/file.txt"],
    ["check", "{place}/empty.csv"], ["check", "{place}/header-only.csv"], ["check", "{place}/words.csv"],
    ["check", "{place}/unknown-task.csv"], ["check", "{place}/no-runs-column.csv"],
    ["check", "{place}/valid.csv", "--draws", "0"], ["check", "{place}/nan-mean.csv"],
    ["check", "{place}/binary.csv"],
    ["import", "ofa-xlt", "{place}/missing"], ["import", "ofa-xlt", "{place}/file.txt"],
    ["import", "ofa-xlt", "{place}/directory"],
    ["ingest", "{place}/missing"], ["ingest", "{place}/file.txt"], ["ingest", "{place}/damaged-runs"],
    ["ingest", "{place}/damaged-runs/bad"],
    ["validate", "{place}/missing"], ["validate", "{place}/file.txt"], ["validate", "{place}/damaged-runs"],
    ["materialize", "--draws", "0"], ["materialize", "--strategy", "nope"], ["materialize", "--task", "nope"],
    ["materialize", "--launcher", "nope"], ["materialize", "--out", "{place}/file.txt"],
    ["materialize", "--seed", "-1"],
    ["average", "{place}/out.safetensors", "{place}/missing.safetensors"],
    ["average", "{place}/out.safetensors", "{place}/header-overflow.safetensors"],
    ["average", "{place}/out.safetensors", "{place}/pickle.safetensors"],
    ["average", "{place}/out.safetensors", "{place}/directory"],
    ["average", "{place}/out.safetensors", "{place}/file.txt"],
    ["average", "{place}/out.safetensors", "{place}/a.safetensors", "{place}/b.safetensors"],
    ["average", "{place}/out.safetensors", "{place}/a.safetensors", "{place}/a4.safetensors"],
    ["average", "--weights", "abc", "{place}/out.safetensors", "{place}/a.safetensors", "{place}/a.safetensors"],
    ["average", "--weights", "1", "{place}/out.safetensors", "{place}/a.safetensors", "{place}/a.safetensors"],
    ["average", "--weights", "-1,2", "{place}/out.safetensors", "{place}/a.safetensors", "{place}/a.safetensors"],
    ["average", "--weights", "nan,1", "{place}/out.safetensors", "{place}/a.safetensors", "{place}/a.safetensors"],
    ["average", "--accumulate", "{place}/file.txt", "{place}/a.safetensors"],
    ["average", "{place}/file.txt/out.safetensors", "{place}/a.safetensors"],
    ["train", "{place}/missing.toml"], ["train", "{place}/directory"], ["train", "{place}/not-toml.toml"],
    ["train", "{place}/no-tasks.toml"], ["train", "{place}/no-data.toml"], ["train", "{place}/not-toml.toml", "--task", "nope"],
    ["train", "{place}/no-data.toml", "--launcher", "nope"],
    ["train", "{place}/text-learning-rate.toml"],
    ["adopt", "{place}/missing", "--task", "nli", "--data", "{{ directory = 'x' }}", "--out", "{place}/adopted"],
    ["adopt", "{place}/directory", "--task", "nli", "--data", "{{ directory = 'x' }}", "--out", "{place}/adopted"],
    ["adopt", "{place}/directory", "--task", "nope", "--data", "{{ directory = 'x' }}", "--out", "{place}/adopted"],
    ["adopt", "{place}/directory", "--task", "nli", "--data", "not toml [", "--out", "{place}/adopted"],
    ["adopt", "{place}/directory", "--task", "nli", "--data", "{{ directory = 'x' }}", "--out", "{place}/file.txt"],
    ["adopt", "{place}/directory", "--task", "nli", "--data", "{{ directory = 'x' }}", "--out", "{place}/adopted",
     "--learning-rate", "0"],
    ["build-model", "{place}/missing.txt", "--out", "{place}/built"],
    ["build-model", "{place}/directory", "--out", "{place}/built"],
    ["build-model", "{place}/binary.csv", "--out", "{place}/built", "--pretrain-steps", "0"],
    ["build-model", "{place}/file.txt", "--out", "{place}/file.txt"],
    ["build-model", "{place}/file.txt", "--out", "{place}/built", "--vocab-size", "5"],
    ["build-model", "{place}/file.txt", "--out", "{place}/built", "--hidden", "33", "--heads", "2"],
    ["build-model", "{place}/file.txt", "--out", "{place}/file.txt/built", "--pretrain-steps", "0"],
    ["quickstart", "{place}/file.txt"], ["quickstart", "{place}/quick", "--task", "nope"],
    ["quickstart", "{place}/file.txt/quick"],
]


def _id(args) -> str:
    args = args.values[0] if hasattr(args, "values") else args
    return " ".join(arg.replace("{place}/", "") for arg in args)


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=_id)
def test_bad_arguments(place, args):
    assert_clean_failure(run_cli(place / "release.duckdb", *expand(args, place)))


def test_every_command_is_exercised():
    """A new command gets bad inputs here too."""
    from ofa_eval.cli import main

    exercised = {(args.values[0] if hasattr(args, "values") else args)[0] for args in BAD_ARGUMENTS}
    assert exercised | set(STORE_COMMANDS) == set(main.commands)
