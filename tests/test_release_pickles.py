"""The authors' original release (pickled pandas DataFrames): imported without pandas, row for
row as the Parquet copies; a pickle naming any other global is refused before it runs."""

import builtins
import functools
import os
import pickle
import shutil
import subprocess

import duckdb
import pytest
from click.testing import CliRunner

from conftest import RELEASE

PICKLES = RELEASE / "original-pickles"


def import_release(db, directory):
    from ofa_eval.cli import main

    return CliRunner().invoke(main, ["--db", str(db), "import", "ofa-xlt", str(directory)], catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def parquet_store(tmp_path_factory):
    """A fresh import of the Parquet copies (not the shared `release_store`, which other tests
    add protocol results to)."""
    if not PICKLES.is_dir():
        pytest.skip(f"the paper's release is not at {RELEASE} (it lives in ../shared beside the repository)")
    db = tmp_path_factory.mktemp("parquet") / "parquet.duckdb"
    result = import_release(db, RELEASE)
    assert result.exit_code == 0, result.output
    return db


def relations(con, database):
    return con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE database_name = ? AND schema_name = 'main' AND NOT internal",
        [database, database]).fetchall()


@pytest.mark.parametrize("layout", ["clone", "pickles-folder"])
def test_the_pickles_import_row_for_row_like_the_parquet_copies(parquet_store, tmp_path, layout):
    """Every table and view of the two stores, ids included, holds the same rows."""
    folder = tmp_path / "ofa-xlt" / "analysis" / "pickles" if layout == "clone" else tmp_path / "pickles"
    shutil.copytree(PICKLES, folder)
    db = tmp_path / "pickles.duckdb"
    result = import_release(db, tmp_path / "ofa-xlt" if layout == "clone" else folder)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "nli: 126 runs, 1800 averaged models, 24 draws, 80082 scores added"
    con = duckdb.connect()
    con.execute("SET threads = 1")  # the views' float sums in one fixed order, the same in both stores
    con.execute(f"ATTACH '{parquet_store}' AS parquet (READ_ONLY)")
    con.execute(f"ATTACH '{db}' AS pickles (READ_ONLY)")
    names = sorted(relations(con, "parquet"))
    assert names == sorted(relations(con, "pickles"))
    assert ("score_table",) in names and ("averaged_models",) in names
    for (name,) in names:
        for a, b in (("parquet", "pickles"), ("pickles", "parquet")):
            differing = con.execute(
                f"SELECT count(*) FROM (SELECT * FROM {a}.{name} EXCEPT ALL SELECT * FROM {b}.{name})").fetchone()[0]
            assert differing == 0, f"{name}: {differing} rows of {a} are not in {b}"
    assert con.execute("SELECT count(*) FROM pickles.score_table").fetchone()[0] == 178771


class Hostile:
    """Unpickled by a stock unpickler, this runs `call(*args)`."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def hostile_payloads(marker):
    return {
        "os.system": Hostile(os.system, (f"touch {marker}",)),
        "subprocess.Popen": Hostile(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.eval": Hostile(builtins.eval, (f"open({str(marker)!r}, 'w').close()",)),
        "partial(os.system)": Hostile(functools.partial(os.system, f"touch {marker}"), ()),
    }


@pytest.mark.parametrize("kind,refused", [("os.system", "posix.system"), ("subprocess.Popen", "subprocess.Popen"),
                                          ("builtins.eval", "builtins.eval"), ("partial(os.system)", "posix.system")])
def test_a_hostile_pickle_is_refused_and_nothing_runs(cli, tmp_path, kind, refused):
    marker = tmp_path / "pwned"
    control = tmp_path / "control"
    payload = pickle.dumps(hostile_payloads(marker)[kind])
    # the payload is live: a stock unpickler runs it (against a control marker)
    started = pickle.loads(pickle.dumps(hostile_payloads(control)[kind]))
    if isinstance(started, subprocess.Popen):
        started.wait()
    assert control.exists()
    release = tmp_path / "release"
    release.mkdir()
    (release / "nli_zs.pkl").write_bytes(payload)
    assert_one_line_error(cli("import", "ofa-xlt", release), "nli_zs.pkl", f"'{refused}'")
    assert not marker.exists()


def test_a_hostile_pickle_among_the_real_ones_leaves_the_store_untouched(parquet_store, cli, tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(PICKLES, clone / "analysis" / "pickles")
    marker = tmp_path / "pwned"
    (clone / "analysis" / "pickles" / "ner_ra.pkl").write_bytes(pickle.dumps(Hostile(os.system, (f"touch {marker}",))))
    assert_one_line_error(cli("import", "ofa-xlt", clone), "ner_ra.pkl", "'posix.system'")
    assert not marker.exists()
    assert cli("sql", "SELECT count(*) AS n FROM runs", "--format", "csv").stdout.strip() == "n\n0"


@pytest.mark.parametrize("content,fragment", [
    (b"", "not a readable pickled DataFrame"),
    (b"garbage, not a pickle", "not a readable pickled DataFrame"),
    (pickle.dumps({"lr": [1e-5, 2e-5]})[:-6], "not a readable pickled DataFrame"),
    (pickle.dumps({"lr": [1e-5, 2e-5]}), "does not hold a DataFrame"),
    (b"\x80\x02\x82\x01.", "copyreg extension code"),
])
def test_a_damaged_pickle_gives_a_one_line_error(cli, tmp_path, content, fragment):
    release = tmp_path / "release"
    release.mkdir()
    (release / "nli_zs.pkl").write_bytes(content)
    assert_one_line_error(cli("import", "ofa-xlt", release), "nli_zs.pkl", fragment)


def test_a_truncated_release_pickle_gives_a_one_line_error(parquet_store, cli, tmp_path):
    folder = tmp_path / "pickles"
    shutil.copytree(PICKLES, folder)
    original = (folder / "tydiqa_zs.pkl").read_bytes()
    (folder / "tydiqa_zs.pkl").write_bytes(original[: len(original) // 2])
    (folder / "ner_ra.pkl").unlink()
    assert_one_line_error(cli("import", "ofa-xlt", folder), "tydiqa_zs.pkl: not a readable pickled DataFrame")
    (folder / "tydiqa_zs.pkl").write_bytes(original)
    assert_one_line_error(cli("import", "ofa-xlt", folder), "ner_ra.pkl: file not found")
    assert cli("sql", "SELECT count(*) AS n FROM runs", "--format", "csv").stdout.strip() == "n\n0"
