"""Output formats of `protocol`, `sql` and `grid`, read back with independent parsers."""

import csv
import io
import json

import pytest



@pytest.fixture
def store(synthetic_store):
    return synthetic_store


def protocol(store, fmt):
    result = store("protocol", "--task", "nli", "--strategy", "max-src-dev", "--strategy", "accumulative",
                   "--variant", "ca", "--replay", "-R", 3, "--format", fmt)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_csv_has_exactly_the_documented_columns(store):
    reader = csv.DictReader(io.StringIO(protocol(store, "csv")))
    assert reader.fieldnames == ["task", "model", "strategy", "variant", "runs", "mean", "std", "draws", "distinct_draws"]
    assert len(list(reader)) == 6


def test_json_matches_csv(store):
    records = json.loads(protocol(store, "json"))
    rows = list(csv.DictReader(io.StringIO(protocol(store, "csv"))))
    assert [(r["strategy"], r["runs"]) for r in records] == [(r["strategy"], int(r["runs"])) for r in rows]
    assert all(abs(r["mean"] - float(c["mean"])) < 1e-5 for r, c in zip(records, rows))


def test_wide_formats_have_one_line_per_r(store):
    markdown = protocol(store, "markdown").splitlines()
    table_lines = [line for line in markdown if line.startswith("| ")]
    assert table_lines[0] == "| r | max-src-dev ca | accumulative ca |"
    assert [line.split(" | ")[0] for line in table_lines[1:]] == ["| 1", "| 2", "| 3"]
    latex = protocol(store, "latex")
    assert r"\begin{tabular}{lll}" in latex and latex.count(r"\\") == 4
    text = protocol(store, "table")
    assert "±" in text and "mean ± std over 3 draws" in text


def test_sql_formats(store):
    query = "SELECT task, count(*) AS runs FROM runs GROUP BY task ORDER BY task"
    assert store("sql", query, "--format", "csv").stdout.splitlines() == [
        "task,runs", "ner,12", "nli,12", "tydiqa,12"]
    assert json.loads(store("sql", query, "--format", "json").stdout)[0] == {"task": "ner", "runs": 12}


def test_help_explains_the_commands(cli):
    text = cli("--help").stdout
    for command in ("import", "ingest", "protocol", "check", "grid", "sql"):
        assert command in text
    assert "max-trg-dev" in cli("protocol", "--help").stdout
