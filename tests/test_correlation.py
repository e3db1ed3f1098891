"""Vectorised correlation coefficients against scipy.stats, with and without ties."""

import numpy as np
import pytest
from scipy import stats

from ofa_eval.statistics.correlation import average_ranks, kendall_tau_b, pearson, spearman


@pytest.mark.parametrize("ties", [False, True])
def test_coefficients_match_scipy_row_by_row(ties):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 25))
    y = x * 0.5 + rng.normal(size=(40, 25))
    if ties:
        x, y = np.round(x), np.round(y * 2) / 2
    got = {"pearson": pearson(x, y), "spearman": spearman(x, y), "kendall": kendall_tau_b(x, y)}
    for row in range(x.shape[0]):
        assert got["pearson"][row] == pytest.approx(stats.pearsonr(x[row], y[row]).statistic, abs=1e-12)
        assert got["spearman"][row] == pytest.approx(stats.spearmanr(x[row], y[row]).statistic, abs=1e-12)
        assert got["kendall"][row] == pytest.approx(stats.kendalltau(x[row], y[row]).statistic, abs=1e-12)


def test_average_ranks_match_scipy_on_a_three_dimensional_array():
    values = np.random.default_rng(1).integers(0, 5, size=(3, 4, 9)).astype(float)
    assert np.array_equal(average_ranks(values), stats.rankdata(values, axis=-1))
