"""The paper's released results: Tables 1 and 2 reproduce, every model works, the grid is right."""

import csv
import io

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import REPO, RELEASE

TABLES = sorted((REPO / "benchmarks" / "tables").glob("*.csv"))


def run(db, *args):
    from ofa_eval.cli import main

    return CliRunner().invoke(main, ["--db", str(db), *map(str, args)], catch_exceptions=False)


def test_check_reproduces_tables_1_and_2(release_store):
    result = run(release_store, "check", *TABLES, "--replay", "--exclude-draw", "1")
    assert result.exit_code == 0, result.output
    assert "240 cells checked, 0 outside tolerance" in result.stdout


def test_table_1_to_the_papers_rounding(release_store):
    """Every Table 1 cell rounds to the paper's printed number (one decimal)."""
    result = run(release_store, "protocol", "--model", "xlm-roberta-large", "--strategy", "max-src-dev",
                 "--strategy", "accumulative", "--replay", "--exclude-draw", "1", "--format", "csv")
    computed = {(r["task"], r["strategy"], r["variant"], r["runs"]): r for r in csv.DictReader(io.StringIO(result.stdout))}
    table = list(csv.DictReader(open(REPO / "benchmarks/tables/table1-xlm-roberta-large.csv")))
    assert len(table) == 180
    for row in table:
        got = computed[(row["task"], row["strategy"], row["variant"], row["runs"])]
        assert f"{float(got['mean']):.1f}" == row["mean"], row
        assert f"{float(got['std']):.1f}" == row["std"], row
        assert got["draws"] == row["draws"]


def test_check_fails_on_a_wrong_cell(release_store, tmp_path):
    table = tmp_path / "wrong.csv"
    table.write_text("task,model,strategy,variant,runs,mean,std,draws\n"
                     "nli,xlm-roberta-large,accumulative,ca,10,79.3,0.1,9\n")
    result = run(release_store, "check", table, "--replay", "--exclude-draw", "1")
    assert result.exit_code == 1
    assert "wrong.csv:2: nli/xlm-roberta-large accumulative ca r=10: mean 78.278, table 79.3" in result.stdout


@pytest.mark.parametrize("task,model", [("nli", "xlm-v-base"), ("tydiqa", "xlm-v-base"),
                                        ("ner", "xlm-roberta-base"), ("ner", "xlm-v-base")])
def test_every_release_model_works(release_store, task, model):
    replay = ["--replay", "--exclude-draw", "1"] if task != "ner" else ["--draws", 10, "--seed", 0]
    strategies = ["--all"] if task != "ner" else ["--strategy", "max-src-dev", "--strategy", "max-trg-dev"]
    result = run(release_store, "protocol", "--task", task, "--model", model, *strategies, *replay, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == (8 if task != "ner" else 4) * 10
    assert all(0 < float(r["mean"]) < 100 for r in rows)


def test_grid_matches_the_release_file(release_store):
    """Appendix Table 3 for one configuration, recomputed from the Parquet file with polars."""
    result = run(release_store, "grid", "--task", "nli", "--model", "xlm-roberta-large", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {(float(r["learning_rate"]), int(r["batch_size"])): r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert len(rows) == 21
    runs = pl.read_parquet(RELEASE / "nli_zs.parquet").filter(
        pl.col("model") == "xlm-roberta-large", pl.col("lr") == 2e-5, pl.col("bs") == 32)
    targets = [c for c in runs.columns if c.endswith("_acc_avg-ckpt") and c.split("_")[0] in ("xnli", "indicxnli")
               and c.split("_")[1] != "en"]
    assert len(targets) == 25
    per_run = runs.select(pl.mean_horizontal(targets) * 100).to_series()
    row = rows[(2e-5, 32)]
    assert float(row["ca target"]) == pytest.approx(per_run.mean(), abs=1e-6)
    assert float(row["ca target std"]) == pytest.approx(per_run.std(), abs=1e-6)
    assert float(row["src-dev src-dev"]) == pytest.approx(runs["validation_oracle-source"].mean() * 100, abs=1e-6)
    assert row["seeds"] == "3"


def test_exact_selection_agrees_with_100000_sampled_draws(release_store):
    """Closed form against Monte Carlo through the protocol's own sampler, on the real runs."""
    import numpy as np

    from ofa_eval.protocol import exact_rows, load_pool, sample_draws, selected_runs
    from ofa_eval.store.database import connected

    with connected(str(release_store), read_only=True) as con:
        pool = load_pool(con, "tydiqa", "xlm-roberta-large")
    exact = exact_rows(pool, [("max-src-dev", "ca"), ("max-trg-dev", "trg-dev")], 5)
    draws = sample_draws(pool, 100_000, 5, seed=1)
    for variant in ("ca", "trg-dev"):
        chosen = selected_runs(pool, draws, variant, 5)
        scores = np.vectorize(pool.target_test[variant].__getitem__, otypes=[float])(chosen)
        for row in (r for r in exact if r["variant"] == variant):
            sampled = scores[:, row["runs"] - 1]
            standard_error = sampled.std() / np.sqrt(len(sampled))
            assert abs(sampled.mean() - row["mean"]) < 4 * standard_error + 1e-9, row
            assert abs(sampled.std() - row["std"]) < 0.02 * row["std"] + 1e-9, row
