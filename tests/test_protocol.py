"""The protocol on a small synthetic release, against a brute-force plain-Python reimplementation."""

import csv
import io

import pytest

from references import brute_force_average, brute_force_mean_std
from synthetic_release import RECIPE_WEIGHTS


@pytest.fixture
def synthetic(synthetic_store):
    return synthetic_store.truth


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("task", ["nli", "tydiqa", "ner"])
def test_replayed_protocol_matches_brute_force(cli, synthetic, task):
    result = cli("protocol", "--task", task, "--model", "tiny-model", "--all", "--replay", "--max-runs", 4,
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert len(rows) == 8 * 4
    draws = [synthetic.draws[task][label] for label in sorted(synthetic.draws[task])]
    for row in rows:
        mean, std = brute_force_mean_std(synthetic, task, row["strategy"], row["variant"], draws, int(row["runs"]))
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-5)
        assert float(row["std"]) == pytest.approx(std, abs=1e-5)
        assert int(row["draws"]) == 3


def test_excluded_draws_are_left_out(cli, synthetic):
    result = cli("protocol", "--task", "nli", "--model", "tiny-model", "--strategy", "accumulative",
                 "--variant", "ca", "--replay", "--exclude-draw", "1", "-R", 4, "--format", "csv")
    assert result.exit_code == 0, result.output
    draws = [synthetic.draws["nli"][label] for label in ("0", "2")]
    for row in _rows(result.stdout):
        mean, _ = brute_force_mean_std(synthetic, "nli", "accumulative", "ca", draws, int(row["runs"]))
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-5)
        assert row["draws"] == "2"


def test_fresh_draws_are_deterministic_and_follow_the_sampling_scheme(cli, synthetic):
    def run(seed):
        result = cli("protocol", "--task", "ner", "--model", "tiny-model", "--strategy", "max-src-dev",
                     "--draws", 7, "--seed", seed, "-R", 6, "--format", "csv")
        assert result.exit_code == 0, result.output
        return result.stdout

    assert run(3) == run(3)
    assert run(3) != run(4)

    from ofa_eval.evaluation import sample_draws
    from ofa_eval.store.database import open_store
    from ofa_eval.evaluation import load_pool

    pool = load_pool(open_store(str(cli.db)), "ner", "tiny-model")
    draws = sample_draws(pool, 50, 6, seed=11)
    for runs in draws.runs:
        configs = [pool.config[r] for r in runs]
        assert len(set(configs)) == 6  # R distinct configurations, one seed each


def test_results_are_written_to_the_store(cli, synthetic):
    cli("protocol", "--task", "nli", "--model", "tiny-model", "--strategy", "soup", "--replay", "-R", 2)
    result = cli("sql", "SELECT strategy, variant, runs, draws, settings FROM protocol_results ORDER BY runs",
                 "--format", "json")
    import json

    stored = json.loads(result.stdout)
    assert [(r["strategy"], r["variant"], r["runs"], r["draws"]) for r in stored] == [
        ("soup", "top5", 1, 3), ("soup", "top5", 2, 3)]
    assert json.loads(stored[0]["settings"])["draws"] == "recorded"


def test_fresh_draws_without_averaged_models_name_the_missing_member_sets(cli, synthetic):
    result = cli("protocol", "--task", "nli", "--model", "tiny-model", "--strategy", "accumulative",
                 "--draws", 5, "--seed", 123, "-R", 4)
    assert result.exit_code == 2
    assert "averaged model(s) have no scores" in result.stderr
    # released results come without weights: the hint is what can be done instead of materializing
    assert "no weights of these runs to make them" in result.stderr and "--replay" in result.stderr
    assert "ofa-eval materialize" not in result.stderr


def test_import_is_idempotent(synthetic_store):
    cli = synthetic_store
    tables = ["run_table", "score_table", "average_table", "average_member_table", "draw_table", "eval_set_table"]
    query = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in tables)
    before = cli("sql", query, "--format", "csv").stdout
    assert cli("import", "ofa-xlt", cli.release).exit_code == 0
    assert cli("sql", query, "--format", "csv").stdout == before


def test_recipes_map_to_release_weights():
    from ofa_eval.artifacts.release import recipe_name

    for recipe, weights in RECIPE_WEIGHTS.items():
        assert recipe_name(weights) == recipe


def test_confidence_intervals_agree_with_scipy(cli, synthetic):
    from scipy import stats

    result = cli("protocol", "--task", "nli", "--model", "tiny-model", "--strategy", "accumulative", "--variant",
                 "ca", "--replay", "-R", 4, "--ci", 90, "--bootstrap", 5000, "--bootstrap-seed", 7, "--format", "csv")
    assert result.exit_code == 0, result.output
    draws = [synthetic.draws["nli"][label] for label in sorted(synthetic.draws["nli"])]
    import numpy as np

    scores = np.array([[brute_force_average(synthetic, "nli", "ca", ids, r) for r in range(1, 5)] for ids in draws])
    reference = stats.bootstrap((scores.T,), np.mean, n_resamples=5000, confidence_level=0.90, method="percentile",
                                axis=-1, rng=np.random.default_rng(7))
    for row in _rows(result.stdout):
        r = int(row["runs"]) - 1
        spread = scores[:, r].std() + 1e-9
        assert float(row["ci_low"]) == pytest.approx(reference.confidence_interval.low[r], abs=0.05 * spread)
        assert float(row["ci_high"]) == pytest.approx(reference.confidence_interval.high[r], abs=0.05 * spread)


def test_replayed_draws_shorter_than_the_configurations_set_the_default_max_runs(import_synthetic_release):
    """6 configurations, recorded draws of 3 runs: --replay without -R goes to r = 3, the same rows as -R 3."""
    cli = import_synthetic_release(max_r=3)
    default = cli("protocol", "--task", "nli", "--strategy", "max-src-dev", "--replay", "--format", "csv")
    assert default.exit_code == 0, default.output
    rows = list(csv.DictReader(io.StringIO(default.stdout)))
    assert max(int(row["runs"]) for row in rows) == 3
    explicit = cli("protocol", "--task", "nli", "--strategy", "max-src-dev", "--replay", "-R", "3", "--format", "csv")
    assert explicit.stdout == default.stdout
