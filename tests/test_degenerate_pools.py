"""`correlate`, `compare` and protocol tables on small pools: constant scores and repeated draws.

References: the synthetic release's plain-Python truth (tests/references.py) and the draws it
recorded, with distinct sets of runs counted by hand.
"""

import json

import polars as pl
import pytest

import synthetic_release
from ofa_eval.results.analysis import compare_pool, correlate_pool
from ofa_eval.results.formatting import render_protocol
from ofa_eval.evaluation import DrawOptions, ResamplingOptions, load_pool
from ofa_eval.store.database import connected
from references import brute_force_curves, recorded_draws

CA_VS_SRC_DEV = ("accumulative:ca", "max-src-dev:src-dev")


def zero_averaged_models(folder):
    """Every averaged model scores 0 in every target language (an averaging that failed)."""
    for task, (_, ra_name, _, metric, _, _) in synthetic_release.TASKS.items():
        path = folder / f"{ra_name}.parquet"
        frame = pl.read_parquet(path)
        targets = [c for c in frame.columns if c.endswith(f"_{metric}") and "_en_" not in c]
        frame.with_columns([pl.lit(0.0).alias(c) for c in targets]).write_parquet(path)


@pytest.fixture
def constant_store(cli, write_synthetic_release):
    folder, truth = write_synthetic_release(n_draws=5, max_r=4, seed=3)
    zero_averaged_models(folder)
    assert cli("import", "ofa-xlt", folder).exit_code == 0
    cli.truth = truth
    return cli


@pytest.fixture
def one_seed_store(cli, write_synthetic_release, monkeypatch):
    """One seed per configuration (6 configurations), 10 recorded draws of all 6 runs."""
    monkeypatch.setattr(synthetic_release, "SEEDS_PER_CONFIG", 1)
    folder, truth = write_synthetic_release(n_draws=10, max_r=6)
    assert cli("import", "ofa-xlt", folder).exit_code == 0
    cli.truth = truth
    return cli


def pool_results(cli, function, *args):
    with connected(cli.db, read_only=True) as con:
        return function(con, load_pool(con, "nli", "tiny-model"), *args)


def distinct_sets(draws, r):
    return len({frozenset(draw[:r]) for draw in draws})


@pytest.mark.parametrize("analysis", [[], ["--analysis", "regret"], ["--analysis", "tracking"]])
def test_correlate_with_constant_scores_reports_undefined_instead_of_a_traceback(constant_store, analysis):
    for fmt in ("table", "json"):
        result = constant_store("correlate", "--task", "nli", "--model", "tiny-model", "--strategy", "accumulative",
                                "--variant", "ca", "--replay", "-R", 4, "--bootstrap", 200, "--format", fmt,
                                *analysis)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    output = json.loads(result.stdout)
    draws = recorded_draws(constant_store.truth, "nli")
    oracle = brute_force_curves(constant_store.truth, "nli", "max-trg-dev", "trg-dev", draws, 4)
    for row in output.get("tracking", []):
        assert row["value"] is None and row["low"] is None and row["high"] is None
    for row in output.get("regret", []):
        assert row["value"] == pytest.approx(oracle[:, row["runs"] - 1].mean(), abs=1e-9)
        assert row["distinct_draws"] == distinct_sets(draws, row["runs"])


def test_constant_scores_come_with_a_one_line_reason(constant_store):
    results = pool_results(constant_store, correlate_pool, [("accumulative", "ca")], DrawOptions(replay=True), 4,
                           ResamplingOptions(level=0.95, n_resamples=200, seed=0))
    undefined = [note for note in results.notes if "tracking is undefined" in note]
    assert len(undefined) == 1 and "\n" not in undefined[0]
    assert "its score is 0 in every (draw, r) cell" in undefined[0] and "constant" in undefined[0]
    assert all(row["value"] is None for row in results["languages"])  # constant: no correlation
    assert any("languages is undefined" in note for note in results.notes)


def test_compare_with_constant_scores_works(constant_store):
    result = constant_store("compare", *CA_VS_SRC_DEV, "--task", "nli", "--replay", "-R", 4, "--format", "json")
    assert result.exit_code == 0, result.output
    draws = recorded_draws(constant_store.truth, "nli")
    selected = brute_force_curves(constant_store.truth, "nli", "max-src-dev", "src-dev", draws, 4)
    for row in json.loads(result.stdout)["by_r"]:
        assert row["difference"] == pytest.approx(-selected[:, row["runs"] - 1].mean(), abs=1e-9)


def test_compare_counts_each_distinct_draw_once(one_seed_store):
    result = one_seed_store("compare", *CA_VS_SRC_DEV, "--task", "nli", "--replay", "-R", 6, "--format", "json")
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    draws = recorded_draws(one_seed_store.truth, "nli")
    a = brute_force_curves(one_seed_store.truth, "nli", "accumulative", "ca", draws, 6)
    b = brute_force_curves(one_seed_store.truth, "nli", "max-src-dev", "src-dev", draws, 6)
    for row in output["by_r"]:
        r = row["runs"]
        assert row["distinct_draws"] == distinct_sets(draws, r)
        assert row["difference"] == pytest.approx((a - b)[:, r - 1].mean(), abs=1e-9)
    at_all_runs = output["by_r"][-1]
    assert at_all_runs["distinct_draws"] == 1
    assert at_all_runs["low"] == at_all_runs["high"] == pytest.approx(at_all_runs["difference"], abs=1e-9)
    assert output["by_language"] and all(row["distinct_draws"] == 1 and row["p_value"] == 1.0
                                         and row["p_holm"] == 1.0 for row in output["by_language"])


def test_compare_notes_where_draws_repeat(one_seed_store):
    options = DrawOptions(replay=True)
    results = pool_results(one_seed_store, compare_pool, ("accumulative", "ca"), ("max-src-dev", "src-dev"),
                           options, 6, ResamplingOptions(level=0.95, n_resamples=200, seed=0), "holm")
    assert len(results.notes) == 1
    assert "at r = 6 the 10 draws hold 1 distinct set of runs" in results.notes[0]
    assert list(results) == ["by_r", "by_language"]  # the notes are no analysis of their own


def test_correlate_rows_carry_distinct_draws(one_seed_store):
    result = one_seed_store("correlate", "--task", "nli", "--strategy", "accumulative", "--variant", "ca",
                            "--replay", "-R", 6, "--bootstrap", 200, "--format", "json")
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    draws = recorded_draws(one_seed_store.truth, "nli")
    assert {row["distinct_draws"] for row in output["tracking"]} == {len({tuple(d) for d in draws})}
    for row in output["regret"]:
        assert row["distinct_draws"] == distinct_sets(draws, row["runs"])
    last = output["regret"][-1]
    assert last["distinct_draws"] == 1 and last["low"] == last["high"] == pytest.approx(last["value"])
    assert all(row["distinct_draws"] == 1 for row in output["languages"])


def protocol_row(runs, mean, std, **extra):
    return {"task": "nli", "model": "m", "strategy": "accumulative", "variant": "ca", "runs": runs, "mean": mean,
            "std": std, "draws": 10, **extra}


def test_protocol_table_marks_a_single_distinct_draw_instead_of_a_zero_std():
    rows = [protocol_row(1, 61.25, 1.5, distinct_draws=7), protocol_row(2, 62.0, 0.0, distinct_draws=1)]
    for fmt in ("table", "markdown", "latex"):
        text = render_protocol(rows, fmt)
        assert "62.0 (1 distinct draw)" in text and "± 0.0" not in text and "0.0]" not in text
        assert "61.2 ± 1.5" in text.replace(r"$\pm$", "±")
    assert "± 0.0" in render_protocol([protocol_row(2, 62.0, 0.0)], "table")  # no column: as before


def test_protocol_csv_and_json_keep_the_numbers_with_the_column():
    rows = [protocol_row(2, 62.0, 0.0, distinct_draws=1)]
    lines = render_protocol(rows, "csv").splitlines()
    assert lines == ["task,model,strategy,variant,runs,mean,std,draws,distinct_draws",
                     "nli,m,accumulative,ca,2,62.0,0.0,10,1"]
    assert json.loads(render_protocol(rows, "json"))[0]["std"] == 0.0
    assert render_protocol([protocol_row(2, 62.0, 0.0)], "csv").splitlines()[0].endswith("std,draws")
    with_interval = [protocol_row(2, 62.0, 0.0, distinct_draws=1, ci_low=62.0, ci_high=62.0)]
    assert render_protocol(with_interval, "csv").splitlines()[0].endswith("draws,distinct_draws,ci_low,ci_high")
    assert "62.0 [62.0, 62.0] (1 distinct draw)" in render_protocol(with_interval, "table")


def test_compare_table_shows_the_distinct_draws_column(one_seed_store):
    result = one_seed_store("compare", *CA_VS_SRC_DEV, "--task", "nli", "--replay", "-R", 6)
    assert result.exit_code == 0
    header = next(line for line in result.stdout.splitlines() if line.startswith("task"))
    assert "distinct_draws" in header.split()
