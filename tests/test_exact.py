"""Closed-form selection moments against brute-force enumeration and Monte Carlo draws."""

import math

import numpy as np
import pytest

from ofa_eval.statistics.exact import expected_selection, expected_selection_curve, selection_probabilities
from references import brute_force_moments, brute_force_probabilities, monte_carlo_selected_scores


def random_grid(rng, n_configs, seed_range, integer_criteria):
    """A pool with n_configs configurations and a random number of seeds each."""
    seeds = rng.integers(seed_range[0], seed_range[1] + 1, size=n_configs)
    config_ids = np.repeat(np.arange(n_configs), seeds)
    if integer_criteria:
        criterion = rng.integers(0, 3, size=config_ids.size).astype(float)
    else:
        criterion = rng.normal(size=config_ids.size)
    score = rng.normal(70.0, 5.0, size=config_ids.size)
    return config_ids, criterion, score


@pytest.mark.parametrize("integer_criteria", [False, True], ids=["continuous", "many-ties"])
@pytest.mark.parametrize("grid_seed", range(4))
def test_matches_brute_force_enumeration(grid_seed, integer_criteria):
    rng = np.random.default_rng(1000 + grid_seed)
    config_ids, criterion, score = random_grid(rng, n_configs=5, seed_range=(1, 3),
                                               integer_criteria=integer_criteria)
    curve = expected_selection_curve(config_ids, criterion, score, max_r=5)
    for r in range(1, 6):
        mean, std = brute_force_moments(config_ids, criterion, score, r)
        assert curve.mean[r - 1] == pytest.approx(mean, abs=1e-9)
        assert curve.std[r - 1] == pytest.approx(std, abs=1e-9)
        expected = brute_force_probabilities(config_ids, criterion, r)
        np.testing.assert_allclose(curve.probabilities[r - 1], expected, atol=1e-12)


def test_single_value_api_matches_curve_and_labels_may_be_strings():
    rng = np.random.default_rng(7)
    config_ids, criterion, score = random_grid(rng, 6, (2, 3), integer_criteria=True)
    labels = np.array([f"lr{c}-bs16" for c in config_ids])
    curve = expected_selection_curve(config_ids, criterion, score, 6)
    for r in range(1, 7):
        moments = expected_selection(labels, criterion, score, r)
        assert moments.mean == pytest.approx(curve.mean[r - 1], abs=1e-12)
        assert moments.std == pytest.approx(curve.std[r - 1], abs=1e-12)


def test_probabilities_are_a_distribution_and_r_equal_c_picks_the_best_seed_draw():
    config_ids = np.array([0, 0, 1, 1, 1, 2])
    criterion = np.array([1.0, 5.0, 2.0, 5.0, 3.0, 4.0])
    probabilities = selection_probabilities(config_ids, criterion, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    # r = 1: a uniform configuration, then a uniform seed.
    np.testing.assert_allclose(probabilities[0], [1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9, 1 / 3])
    np.testing.assert_allclose(probabilities[2], brute_force_probabilities(config_ids, criterion, 3))


def test_all_tied_is_uniform_over_runs_weighted_by_seed_counts():
    config_ids = np.array([0, 1, 1, 2, 2, 2])
    probabilities = selection_probabilities(config_ids, np.zeros(6), 3)
    np.testing.assert_allclose(probabilities[2], [1 / 3, 1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9])


def test_rejects_r_above_the_number_of_configurations_and_bad_inputs():
    config_ids = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="exceeds"):
        expected_selection(config_ids, [1.0, 2.0, 3.0, 4.0], [1.0] * 4, r=3)
    with pytest.raises(ValueError, match="positive"):
        expected_selection(config_ids, [1.0, 2.0, 3.0, 4.0], [1.0] * 4, r=0)
    with pytest.raises(ValueError, match="finite"):
        expected_selection(config_ids, [1.0, np.nan, 3.0, 4.0], [1.0] * 4, r=1)
    with pytest.raises(ValueError, match="shape"):
        expected_selection(config_ids, [1.0, 2.0, 3.0, 4.0], [1.0] * 3, r=1)


@pytest.mark.parametrize("r", [1, 3, 10])
def test_matches_monte_carlo_on_a_larger_grid(r):
    rng = np.random.default_rng(42)
    config_ids, criterion, score = random_grid(rng, n_configs=21, seed_range=(2, 4),
                                               integer_criteria=False)
    criterion = np.round(criterion, 1)  # some ties across configurations
    n_draws = 100_000
    sampled = monte_carlo_selected_scores(config_ids, criterion, score, r, n_draws, rng)
    exact = expected_selection(config_ids, criterion, score, r)
    standard_error = exact.std / math.sqrt(n_draws)
    assert abs(sampled.mean() - exact.mean) < 4 * standard_error
    # The sample std's standard error is about std * sqrt((kurtosis - 1) / (4 n)); 3% is >5 SE.
    assert sampled.std() == pytest.approx(exact.std, rel=0.03)
