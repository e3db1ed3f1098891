"""`ofa-eval compare` and its tests: paired differences, randomization test, corrections."""

import csv
import io
import json
import math

import numpy as np
import pytest
from scipy import stats

from ofa_eval.results.analysis import benjamini_hochberg, holm, sign_flip_p_values
from references import brute_force_curves, recorded_draws


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.005])
    m = len(p)
    order = np.argsort(p)
    expected = np.empty(m)
    for rank, i in enumerate(order):
        expected[i] = min(1.0, max((m - k) * p[order[k]] for k in range(rank + 1)))
    assert np.allclose(holm(p), expected)


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(0).uniform(size=30) ** 3
    assert np.allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"))


def test_exact_sign_flip_matches_scipy_permutation_test():
    differences = np.random.default_rng(1).normal(0.4, 1.0, size=(9, 3))
    got = sign_flip_p_values(differences, np.random.default_rng(0), 2000)
    for column in range(3):
        reference = stats.permutation_test((differences[:, column],), np.mean, permutation_type="samples",
                                           alternative="two-sided", n_resamples=np.inf).pvalue
        assert got[column] == pytest.approx(reference, abs=1e-12)


def share_of_wins(a, b):
    """By hand: the share of draws where a beats b, a tie counting half."""
    points = [1.0 if x > y else 0.5 if math.isclose(x, y, abs_tol=1e-9) else 0.0 for x, y in zip(a, b)]
    return sum(points) / len(points)


def test_compare_differences_and_wins_match_the_protocol_and_brute_force(import_synthetic_release):
    cli = import_synthetic_release(n_draws=4)
    args = ["--task", "ner", "--replay", "-R", 4]
    result = cli("compare", "accumulative:ca", "max-src-dev:src-dev", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    by_r = json.loads(result.stdout)["by_r"]
    assert [row["runs"] for row in by_r] == [1, 2, 3, 4]
    table = {(r["strategy"], int(r["runs"])): float(r["mean"]) for r in csv.DictReader(io.StringIO(cli(
        "protocol", "--strategy", "accumulative", "--strategy", "max-src-dev", "--variant", "ca", "--variant",
        "src-dev", *args, "--format", "csv").stdout)) if r["variant"] in ("ca", "src-dev")
        and (r["strategy"], r["variant"]) in (("accumulative", "ca"), ("max-src-dev", "src-dev"))}
    draws = recorded_draws(cli.truth, "ner")
    a = brute_force_curves(cli.truth, "ner", "accumulative", "ca", draws, 4)
    b = brute_force_curves(cli.truth, "ner", "max-src-dev", "src-dev", draws, 4)
    assert np.isclose(a, b).any()  # a tied draw, so that ties counting half is checked too
    for row in by_r:
        r = row["runs"]
        assert row["difference"] == pytest.approx(
            table[("accumulative", r)] - table[("max-src-dev", r)], abs=1e-5)
        assert row["difference"] == pytest.approx((a[:, r - 1] - b[:, r - 1]).mean(), abs=1e-9)
        assert row["p_a_better"] == pytest.approx(share_of_wins(a[:, r - 1], b[:, r - 1]), abs=1e-12)


def test_compare_rejects_a_malformed_pair(synthetic_store):
    result = synthetic_store("compare", "accumulative", "max-src-dev:src-dev")
    assert result.exit_code == 2 and "STRATEGY:VARIANT" in result.stderr
