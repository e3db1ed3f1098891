"""The paper's released results: Tables 1 and 2 reproduce, every model works, the grid is right."""

import csv
import json
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

    from ofa_eval.evaluation import exact_rows, load_pool, sample_draws, selected_runs
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


POOLS_WITHOUT_DRAWS = ("ner/xlm-roberta-base", "ner/xlm-v-base")  # the release recorded no draws for them


def test_defaults_replay_the_recorded_draws_and_skip_what_cannot_be_computed(release_store):
    """Right after `import ofa-xlt`, `protocol` with no options gives every pool: pools with recorded
    draws replay them (the same numbers as --replay), the two without skip the averaging strategies."""
    result = run(release_store, "protocol", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    replayed = {(r["task"], r["model"], r["strategy"], r["variant"], r["runs"]): r["mean"] for r in csv.DictReader(
        io.StringIO(run(release_store, "protocol", "--replay", "--format", "csv").stdout))}
    for row in rows:
        key = (row["task"], row["model"], row["strategy"], row["variant"], row["runs"])
        if f"{row['task']}/{row['model']}" not in POOLS_WITHOUT_DRAWS:
            assert row["mean"] == replayed[key], key
    strategies = {f"{r['task']}/{r['model']}": set() for r in rows}
    for row in rows:
        strategies[f"{row['task']}/{row['model']}"].add(row["strategy"])
    assert len(strategies) == 7
    for pool, found in strategies.items():
        averaging = {"accumulative", "soup"}
        assert (found & averaging == set()) == (pool in POOLS_WITHOUT_DRAWS), pool
    for pool in POOLS_WITHOUT_DRAWS:
        assert f"note: skipped {pool}: accumulative last, accumulative src-dev, accumulative ca and soup top5: " \
               "99 averaged model(s) have no scores, and the store has no weights" in result.stderr
    assert "materialize" not in result.stderr


def test_compare_with_defaults_compares_averaging_with_selection_where_it_can(release_store):
    result = run(release_store, "compare", "--format", "json", "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    by_r = json.loads(result.stdout)["by_r"]
    assert {(row["a"], row["b"]) for row in by_r} == {("accumulative ca", "max-src-dev src-dev")}
    assert len({(row["task"], row["model"]) for row in by_r}) == 5
    for pool in POOLS_WITHOUT_DRAWS:
        assert f"note: skipped {pool}: accumulative ca: 99 averaged model(s) have no scores" in result.stderr
    named = run(release_store, "compare", "--task", "ner", "--model", "xlm-v-base")
    assert named.exit_code == 2 and "no weights of these runs to make them" in named.stderr
    assert "ofa-eval materialize" not in named.stderr


def test_report_with_defaults_right_after_import(release_store, tmp_path):
    result = run(release_store, "report", tmp_path / "report", "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    skipped = markdown[markdown.index("## Skipped"):markdown.index("## ner / xlm-roberta-base")]
    for pool in POOLS_WITHOUT_DRAWS:
        assert f"- {pool}: accumulative last, accumulative src-dev, accumulative ca and soup top5: " in skipped
        assert f"- {pool}: per-language gain: " in skipped
        assert f"note: skipped {pool}: per-language gain" in result.stderr
    assert len([line for line in markdown.splitlines() if line.startswith("## ")]) == 1 + 7  # Skipped, every pool
    section = markdown[markdown.index("## nli / xlm-roberta-large"):markdown.index("## nli / xlm-v-base")]
    gains = [line for line in section.splitlines() if line.startswith(("| xnli/", "| indicxnli/"))]
    assert len(gains) == 25  # the release's 25 NLI target test sets (XNLI and IndicXNLI)
    assert "| xnli/vi | not recorded | -0.60 [" in markdown  # the one clear loss of averaging on XLM-R large
    assert (tmp_path / "report" / "nli-xlm-roberta-large-language-gain.svg").exists()
    assert "masakhaner/amh, masakhaner/hau" in markdown and "masakhaner/amh (size not recorded)" not in markdown


def test_pools_read_the_scores_the_public_views_give(release_store):
    """load_pool reads a pool's target and source scores in one pass; every value equals the public
    views' target_test (run_variants, average_scores) and the source validation set's score."""
    from ofa_eval.evaluation import load_pool
    from ofa_eval.store.database import connected

    with connected(str(release_store), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM average_scores").fetchone()[0] > 0
        for task, model in con.execute("SELECT DISTINCT task, model FROM run_table").fetchall():
            pool, args = load_pool(con, task, model), [task, model]
            views = {}
            for run_id, variant, value in con.execute(
                    "SELECT run_id, variant, target_test FROM run_variants WHERE task=? AND model=?", args).fetchall():
                views.setdefault(variant, {})[run_id] = value
            assert _close(pool.target_test, views)
            source = {}
            for run_id, variant, value in con.execute(
                    "SELECT sc.run_id, sc.variant, sc.value FROM score_table sc JOIN run_table r USING (run_id) "
                    "JOIN eval_set_table e USING (eval_set_id) WHERE r.task=? AND r.model=? AND e.role='source' "
                    "AND e.split='validation' AND sc.metric=(SELECT metric FROM task_table WHERE task=r.task)",
                    args).fetchall():
                source.setdefault(variant, {})[run_id] = value
            assert _close({v: s for v, s in pool.criteria.items() if v != "trg-dev"}, source)
            averages = {(recipe, key): value for recipe, key, value in con.execute(
                "SELECT recipe, member_key, target_test FROM average_scores WHERE task=? AND model=? AND approach='all'",
                args).fetchall()}
            assert _close(pool.averages, averages)


def _close(mapping: dict, reference: dict) -> bool:
    """The same keys, nested dicts compared key by key, floats to 1e-9."""
    if mapping.keys() != reference.keys():
        return False
    return all(_close(v, reference[k]) if isinstance(v, dict) else abs(v - reference[k]) < 1e-9
               for k, v in mapping.items())
