"""Per-example statistics in the store and the joint draws x examples bootstrap of `protocol`.

The reference is a plain per-resample loop over the synthetic runs' raw gold and predicted
labels: it re-selects runs by hand and recomputes every accuracy from the resampled examples.
"""

import csv
import io
import json

import numpy as np
import pytest

from synthetic_runs import SUBJECTS

MODEL = "synthetic-model"
LANGUAGES = ("de", "sw")  # sorted as the store's 'xnli/de', 'xnli/sw'


def _csv(cli, query):
    return list(csv.DictReader(io.StringIO(cli("sql", query, "--format", "csv").stdout)))


def test_stored_statistics_are_the_raw_predictions_in_example_id_order(cli, ingested):
    rows = _csv(cli, "SELECT r.external_id, x.variant, x.language, x.statistic, x.n_examples, "
                     "list_aggregate(x.\"values\", 'string_agg', ',') AS v "
                     "FROM example_stats x JOIN runs r USING (run_id) WHERE x.variant = 'last'")
    assert len(rows) == 12 * 2  # 12 runs, two target test sets, one statistic ('correct')
    for row in rows:
        gold, predicted = ingested[row["external_id"]][1][(SUBJECTS[9], "xnli", row["language"], "test")]
        ids = [f"{row['language']}-test-{i}" for i in range(len(gold))]
        order = sorted(range(len(ids)), key=ids.__getitem__)
        assert row["statistic"] == "correct" and int(row["n_examples"]) == 40
        assert [float(v) for v in row["v"].split(",")] == [float(gold[i] == predicted[i]) for i in order]


def test_statistics_reproduce_every_stored_target_score(cli, ingested):
    check = _csv(cli, """
        SELECT count(*) AS n, max(abs(s.value - 100 * list_avg(x."values"))) AS worst
        FROM example_stats x
        JOIN scores s ON s.run_id = x.run_id AND s.variant = x.variant AND s.dataset = x.dataset
             AND s.language = x.language AND s.split = x.split AND s.metric = 'accuracy'""")[0]
    assert int(check["n"]) == 12 * 4 * 2 and float(check["worst"]) < 1e-9  # 4 variants incl. TRG-DEV


def _accuracy(pair, picks=None):
    gold, predicted = (np.asarray(x) for x in pair)
    correct = gold == predicted
    return 100.0 * (correct if picks is None else correct[picks]).mean()


def _reference_cells(grid, pool, draws, max_runs, n_resamples, seed, variants=("last",)):
    """Joint bootstrap by brute force from raw labels: {variant: (n_resamples, n_draws, max_runs)}
    for Max SRC-DEV with LAST or SRC-DEV runs, one loop iteration per resample and cell."""
    truth = {name: grid[name][1] for name in pool.external_id.values()}
    order = {lang: np.argsort(np.array([f"{lang}-test-{i}" for i in range(40)])) for lang in LANGUAGES}

    def subject(name, variant):  # LAST: the last snapshot; SRC-DEV: best English validation, earliest on a tie
        source = [_accuracy(truth[name][(s, "xnli", "en", "validation")]) for s in SUBJECTS[:10]]
        return SUBJECTS[9] if variant == "last" else SUBJECTS[int(np.argmax(source))]

    def selected(runs, r, variant):  # best English validation among the first r runs; the first wins a tie
        names = [pool.external_id[run] for run in runs[:r]]
        source = [_accuracy(truth[n][(subject(n, variant), "xnli", "en", "validation")]) for n in names]
        return names[int(np.argmax(source))]

    rng = np.random.default_rng(seed)
    example_picks = {lang: rng.integers(0, 40, size=(n_resamples, 40)) for lang in LANGUAGES}
    draw_picks = rng.integers(0, len(draws.runs), size=(n_resamples, len(draws.runs)))
    cells = {v: np.empty((n_resamples, len(draws.runs), max_runs)) for v in variants}
    for variant in variants:
        for b in range(n_resamples):
            for j, d in enumerate(draw_picks[b]):
                for r in range(1, max_runs + 1):
                    name = selected(draws.runs[d], r, variant)
                    cells[variant][b, j, r - 1] = np.mean([
                        _accuracy(truth[name][(subject(name, variant), "xnli", lang, "test")],
                                  order[lang][example_picks[lang][b]]) for lang in LANGUAGES])
    return cells


def _quantiles(distribution, level):
    alpha = (1 - level) / 2
    return np.quantile(distribution, alpha, axis=0), np.quantile(distribution, 1 - alpha, axis=0)


def _pool_and_draws(cli, n_draws, max_runs, seed):
    from ofa_eval.evaluation import load_pool, sample_draws
    from ofa_eval.store.database import connected

    with connected(str(cli.db), read_only=True) as con:
        pool = load_pool(con, "nli", MODEL)
    return pool, sample_draws(pool, n_draws, max_runs, seed=seed)


def test_joint_interval_matches_a_per_resample_loop_over_raw_predictions(cli, ingested):
    result = cli("protocol", "--strategy", "max-src-dev", "--variant", "last", "--draws", 4, "--seed", 3,
                 "-R", 3, "--ci", 90, "--bootstrap", 40, "--bootstrap-seed", 5, "--resample", "draws+examples",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    pool, draws = _pool_and_draws(cli, 4, 3, seed=3)
    cells = _reference_cells(ingested, pool, draws, 3, 40, seed=5)["last"]
    low, high = _quantiles(cells.mean(axis=1), 0.90)
    assert [row["ci_low"] for row in rows] == pytest.approx(list(low), abs=1e-9)
    assert [row["ci_high"] for row in rows] == pytest.approx(list(high), abs=1e-9)
    stored = _csv(cli, "SELECT settings FROM protocol_results")
    assert json.loads(stored[0]["settings"])["interval"]["resample"] == "draws+examples"


def test_joint_compare_is_paired_cell_by_cell(cli, ingested):
    result = cli("compare", "max-src-dev:last", "max-src-dev:src-dev", "--draws", 3, "--seed", 1, "-R", 2,
                 "--bootstrap", 30, "--bootstrap-seed", 2, "--ci", 80, "--resample", "draws+examples",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    by_r = json.loads(result.stdout)["by_r"]
    pool, draws = _pool_and_draws(cli, 3, 2, seed=1)
    cells = _reference_cells(ingested, pool, draws, 2, 30, seed=2, variants=("last", "src-dev"))
    difference = cells["last"] - cells["src-dev"]
    low, high = _quantiles(difference.mean(axis=1), 0.80)
    p_low, p_high = _quantiles(((difference > 0) + 0.5 * (difference == 0)).mean(axis=1), 0.80)
    assert [row["low"] for row in by_r] == pytest.approx(list(low), abs=1e-9)
    assert [row["high"] for row in by_r] == pytest.approx(list(high), abs=1e-9)
    assert [row["p_low"] for row in by_r] == pytest.approx(list(p_low), abs=1e-9)
    assert [row["p_high"] for row in by_r] == pytest.approx(list(p_high), abs=1e-9)


def test_resampling_examples_too_widens_the_interval(cli, ingested):
    def widths(*extra):
        rows = json.loads(cli("protocol", "--strategy", "max-src-dev", "--strategy", "max-trg-dev", "--draws", 6,
                              "-R", 4, "--ci", 95, "--bootstrap", 400, "--format", "json", *extra).stdout)
        return np.array([row["ci_high"] - row["ci_low"] for row in rows])

    draws_only = widths()
    joint = widths("--resample", "draws+examples")
    # 40 test examples per language add real noise on top of the (large) run-to-run spread
    assert joint.mean() > 1.05 * draws_only.mean() and np.mean(joint > draws_only) > 0.75


def test_released_results_have_no_statistics_to_resample(synthetic_store):
    result = synthetic_store("protocol", "--task", "nli", "--model", "tiny-model", "--strategy",
                             "max-src-dev", "--ci", 95, "--resample", "draws+examples", "--replay", "-R", 4)
    assert result.exit_code == 2
    assert "no per-example statistics for run" in result.output and "released results have none" in result.output


@pytest.mark.parametrize("args, message", [
    (("--resample", "draws+examples"), "--resample applies to a confidence interval"),
    (("--ci", 95, "--ci-method", "bca", "--resample", "draws+examples"), "percentile intervals only"),
])
def test_bad_resampling_options_are_one_line_errors(cli, ingested, args, message):
    result = cli("protocol", "--strategy", "max-src-dev", *args)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
