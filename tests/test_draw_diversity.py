"""Distinct draws and the statistics that count identical draws once, against brute force and scipy."""

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from ofa_eval.results.analysis import sign_flip_p_values
from ofa_eval.statistics.draw_diversity import grouped_bootstrap_means
from ofa_eval.statistics.correlation import kendall_tau_b, pearson, spearman
from ofa_eval.statistics.draw_diversity import describe_repeats, distinct_draws, draw_groups, paired_groups


def brute_force_distinct(draws, r):
    """Draws at r that differ, as sorted tuples, compared pairwise with every earlier draw."""
    firsts = [d for i, d in enumerate(draws) if all(sorted(d[:r]) != sorted(e[:r]) for e in draws[:i])]
    return len(firsts)


def test_distinct_draws_of_random_draws_match_pairwise_comparison():
    rng = random.Random(0)
    for _ in range(50):
        configs, seeds = rng.randint(1, 5), rng.randint(1, 3)
        max_runs = rng.randint(1, configs)
        draws = [[c * 10 + rng.randrange(seeds) for c in rng.sample(range(configs), max_runs)]
                 for _ in range(rng.randint(1, 12))]
        assert distinct_draws(draws, max_runs) == [brute_force_distinct(draws, r) for r in range(1, max_runs + 1)]


@pytest.mark.parametrize("seeds", [(1, 1, 1, 1), (2, 1, 3), (2, 2, 2)])
def test_every_possible_draw_once_gives_the_number_of_run_sets(seeds):
    """All ordered draws of a pool: at r they hold C(configs, r) x seed choices distinct sets."""
    runs = {c: [f"c{c}s{s}" for s in range(n)] for c, n in enumerate(seeds)}
    draws = [list(picked) for order in itertools.permutations(runs)
             for picked in itertools.product(*(runs[c] for c in order))]
    expected = [sum(math.prod(seeds[c] for c in subset) for subset in itertools.combinations(range(len(seeds)), r))
                for r in range(1, len(seeds) + 1)]
    assert distinct_draws(draws, len(seeds)) == expected


def test_one_seed_per_configuration_leaves_one_set_at_r_equal_to_the_configurations():
    draws = [random.Random(i).sample(range(4), 4) for i in range(10)]
    assert distinct_draws(draws, 4)[-1] == 1
    assert draw_groups(draws, 4).tolist() == [0] * 10
    note = describe_repeats(distinct_draws(draws, 4), 10)
    assert note.startswith("at r = 4 the 10 draws hold 1 distinct set of runs")


def test_groups_ordered_and_paired():
    draws = [[1, 2, 3], [2, 1, 3], [1, 2, 3], [3, 2, 1]]
    assert draw_groups(draws, 2).tolist() == [0, 0, 0, 1]
    assert draw_groups(draws, 3, ordered=True).tolist() == [0, 1, 0, 2]
    assert paired_groups(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])).tolist() == [0, 1, 2, 3]
    assert paired_groups(np.array([0, 0, 1, 1]), np.array([5, 5, 7, 7])).tolist() == [0, 0, 1, 1]
    assert describe_repeats([3, 3], 3) is None
    assert describe_repeats([2, 3, 1], 3) == "at r = 3 the 3 draws hold 1 distinct set of runs (r = 1: 2)"


def brute_force_grouped_p(differences, groups):
    """Every sign pattern over the distinct draws; a draw takes its group's sign."""
    n_groups = max(groups) + 1
    observed = abs(np.mean(differences))
    hits = [abs(np.mean([s[g] * d for g, d in zip(groups, differences)])) >= observed - 1e-12
            for s in itertools.product([-1.0, 1.0], repeat=n_groups)]
    return np.mean(hits)


def test_grouped_sign_flip_matches_enumeration_over_distinct_draws():
    rng = np.random.default_rng(3)
    for groups in ([0, 1, 2, 0, 1, 3, 3, 4], [0] * 10, [0, 1] * 5, list(range(7))):
        differences = rng.normal(0.5, 1.0, size=(len(groups), 2))
        got = sign_flip_p_values(differences, rng, 2000, np.array(groups))
        for column in range(2):
            assert got[column] == pytest.approx(brute_force_grouped_p(differences[:, column], groups), abs=1e-12)


def test_ten_copies_of_one_draw_are_no_evidence():
    """The bug: ten identical draws gave p = 2 / 1024; as one draw, p is 1."""
    differences = np.full((10, 3), -2.5)
    assert sign_flip_p_values(differences, None, 2000).max() < 0.01
    assert sign_flip_p_values(differences, None, 2000, np.zeros(10, dtype=int)).tolist() == [1.0, 1.0, 1.0]


def test_grouped_sign_flip_with_equal_copies_matches_scipy_on_the_distinct_draws():
    distinct = np.random.default_rng(4).normal(0.3, 1.0, size=6)
    copies = np.repeat(distinct, 3)
    got = sign_flip_p_values(copies[:, None], None, 2000, np.repeat(np.arange(6), 3))[0]
    reference = stats.permutation_test((distinct,), np.mean, permutation_type="samples", alternative="two-sided",
                                       n_resamples=np.inf).pvalue
    assert got == pytest.approx(reference, abs=1e-12)


def test_grouped_bootstrap_matches_the_exact_distribution_of_resampled_groups():
    """Three distinct draws drawn 1, 2 and 3 times: every resample picks 3 groups (27 equally
    likely ordered picks) and averages all their copies."""
    values = np.array([1.0, 4.0, 4.0, 10.0, 10.0, 10.0])
    groups = np.array([0, 1, 1, 2, 2, 2])
    sums, sizes = {0: 1.0, 1: 8.0, 2: 30.0}, {0: 1, 1: 2, 2: 3}
    exact = {}
    for picks in itertools.product(range(3), repeat=3):
        mean = round(sum(sums[g] for g in picks) / sum(sizes[g] for g in picks), 9)
        exact[mean] = exact.get(mean, 0) + 1 / 27
    got = grouped_bootstrap_means(values, groups, np.random.default_rng(0), 20_000)
    seen = dict(zip(*np.unique(np.round(got, 9), return_counts=True)))
    assert set(seen) <= set(exact)
    for mean, probability in exact.items():
        assert seen.get(mean, 0) / 20_000 == pytest.approx(probability, abs=0.015)


def test_grouped_bootstrap_of_one_distinct_draw_is_a_point():
    values = np.array([[3.0, 1.0]] * 5)
    got = grouped_bootstrap_means(values, np.zeros(5, dtype=int), np.random.default_rng(0), 100)
    assert np.all(got == values[0])


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_coefficients_are_those_of_the_repeated_sample(ties):
    rng = np.random.default_rng(5)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    if ties:
        x, y = np.round(x), np.round(y)
    weights = rng.integers(0, 4, size=(30, 12)).astype(float)
    weights[:, :3] += 1  # at least three observations in every row
    got = {"pearson": pearson(x, y, weights), "spearman": spearman(x, y, weights),
           "kendall": kendall_tau_b(x, y, weights)}
    reference = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}
    for row, w in enumerate(weights.astype(int)):
        xr, yr = np.repeat(x, w), np.repeat(y, w)
        for name, f in reference.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                expected = f(xr, yr).statistic
            assert got[name][row] == pytest.approx(expected, abs=1e-12, nan_ok=True), name


@pytest.mark.parametrize("value", [0.0, 61.3, 1 / 3])
def test_a_constant_has_no_correlation(value):
    """scipy: constant input gives nan; rounding in the mean must not turn that into 0 or 1."""
    x, y = np.full(7, value), np.arange(7.0)
    for f in (pearson, spearman, kendall_tau_b):
        assert math.isnan(f(x, y)) and math.isnan(f(y, x))
    with pytest.warns(stats.ConstantInputWarning):
        assert math.isnan(stats.pearsonr(x, y).statistic)
