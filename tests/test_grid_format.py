"""`ofa-eval grid` output: learning rates as written, other numbers at 2 digits, in every format."""

import csv
import io
import json
import statistics

import pytest

LEARNING_RATES = {1e-5: "1e-05", 2e-5: "2e-05", 3e-5: "3e-05"}  # the synthetic release's grid


def grid(store, fmt):
    result = store("grid", "--task", "nli", "--model", "tiny-model", "--format", fmt)
    assert result.exit_code == 0, result.output
    return result.stdout


def expected_last_target(truth, lr, bs):
    """By hand from the release's truth: mean LAST target score over the seeds of (lr, bs)."""
    return statistics.mean(run["target_last"] for run in truth.runs["nli"].values()
                           if run["lr"] == lr and run["bs"] == bs)


def check_rows(rows, truth):
    """rows: (learning rate text, batch size text, last target text) from any format."""
    assert sorted({lr for lr, _, _ in rows}) == sorted(LEARNING_RATES.values())
    for lr_text, bs_text, target_text in rows:
        lr = next(value for value, text in LEARNING_RATES.items() if text == lr_text)
        expected = expected_last_target(truth, lr, int(bs_text))
        assert float(target_text) == pytest.approx(expected, abs=0.0051)  # half a last digit


def test_table_shows_learning_rates_as_written(synthetic_store):
    lines = grid(synthetic_store, "table").splitlines()
    spans, start = [], 0
    for dashes in lines[1].split("  "):  # the rule under the header gives each column's width
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 2
    header = [lines[0][a:b].strip() for a, b in spans]
    cells = [[line[a:b].strip() for a, b in spans] for line in lines[2:]]
    target = header.index("last target")
    rows = [(row[0], row[1], row[target]) for row in cells]
    assert len(rows) == 6 and "0.00" not in {lr for lr, _, _ in rows}
    assert all(len(text.split(".")[1]) == 2 for _, _, text in rows)  # other numbers keep 2 digits
    check_rows(rows, synthetic_store.truth)


def test_markdown_shows_learning_rates_as_written(synthetic_store):
    lines = [line for line in grid(synthetic_store, "markdown").splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    target = header.index("last target")
    rows = [(row[0], row[1], row[target]) for row in cells]
    assert all(len(text.split(".")[1]) == 2 for _, _, text in rows)
    check_rows(rows, synthetic_store.truth)


def test_csv_and_json_keep_exact_learning_rates(synthetic_store):
    records = list(csv.DictReader(io.StringIO(grid(synthetic_store, "csv"))))
    check_rows([(r["learning_rate"], r["batch_size"], r["last target"]) for r in records], synthetic_store.truth)
    assert {float(r["learning_rate"]) for r in records} == set(LEARNING_RATES)
    assert {r["learning_rate"] for r in json.loads(grid(synthetic_store, "json"))} == set(LEARNING_RATES)
