"""Vectorised correlation coefficients over many resamples at once.

Each function takes arrays of shape (..., n) and correlates along the last axis, so a bootstrap
evaluates all its resamples in one call: Pearson's r, Spearman's rho (Pearson on average ranks)
and Kendall's tau-b (ties handled as in scipy.stats.kendalltau).

`weights` (shape broadcastable to (..., n)) count how often each observation occurs: the result
is the coefficient of the sample with every observation repeated that many times, which is how
a bootstrap that resamples groups of identical observations evaluates its resamples.
"""

from __future__ import annotations

import numpy as np


def _weights(x: np.ndarray, weights) -> np.ndarray:
    return np.ones(x.shape[-1]) if weights is None else np.asarray(weights, dtype=float)


def is_constant(x: np.ndarray, weights=None) -> np.ndarray:
    """Whether the observations of positive weight all have one value (no correlation is defined)."""
    counted = _weights(x, weights) > 0
    return np.where(counted, x, -np.inf).max(axis=-1) == np.where(counted, x, np.inf).min(axis=-1)


def pearson(x: np.ndarray, y: np.ndarray, weights=None) -> np.ndarray:
    w = _weights(x, weights)
    total = w.sum(axis=-1, keepdims=True)
    # a constant's mean can differ from it in the last bit: undefined is decided exactly, not by
    # a denominator that rounding leaves just above zero
    undefined = is_constant(x, w) | is_constant(y, w)
    x = x - (w * x).sum(axis=-1, keepdims=True) / total
    y = y - (w * y).sum(axis=-1, keepdims=True) / total
    denominator = np.sqrt((w * x * x).sum(axis=-1) * (w * y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(undefined, np.nan, (w * x * y).sum(axis=-1) / denominator)[()]


def average_ranks(values: np.ndarray, weights=None) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their average rank.

    With weights, the average rank of each observation in the sample with each observation
    repeated its weight times: the weight below its value plus (the weight at its value + 1) / 2.
    """
    values, w = np.broadcast_arrays(values, _weights(values, weights))
    order = np.argsort(values, axis=-1, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=-1)
    sorted_weights = np.take_along_axis(w, order, axis=-1)
    n = values.shape[-1]
    new_group = np.concatenate([np.ones(values.shape[:-1] + (1,), bool),
                                sorted_values[..., 1:] != sorted_values[..., :-1]], axis=-1)
    group = np.cumsum(new_group, axis=-1)
    # one bincount over every row: row i's groups are numbered i * (n + 1) + 1 ..
    rows = int(np.prod(values.shape[:-1]))
    flat_group = group + np.arange(rows).reshape(values.shape[:-1] + (1,)) * (n + 1)
    group_weight = np.bincount(flat_group.ravel(), weights=sorted_weights.ravel(), minlength=rows * (n + 1))
    weight_below = (np.cumsum(group_weight.reshape(rows, n + 1), axis=-1).ravel() - group_weight)
    averaged_sorted = (weight_below[flat_group] + (group_weight[flat_group] + 1) / 2).reshape(values.shape)
    ranks = np.empty_like(averaged_sorted)
    np.put_along_axis(ranks, order, averaged_sorted, axis=-1)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray, weights=None) -> np.ndarray:
    return pearson(average_ranks(x, weights), average_ranks(y, weights), weights)


def kendall_tau_b(x: np.ndarray, y: np.ndarray, weights=None) -> np.ndarray:
    n = x.shape[-1]
    i, j = np.triu_indices(n, k=1)
    dx = np.sign(x[..., j] - x[..., i])
    dy = np.sign(y[..., j] - y[..., i])
    w = _weights(x, weights)
    pair_weight = w[..., i] * w[..., j]  # copies of one observation are tied pairs: they count nowhere
    concordance = (pair_weight * dx * dy).sum(axis=-1)
    untied_x = (pair_weight * (dx != 0)).sum(axis=-1)
    untied_y = (pair_weight * (dy != 0)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return concordance / np.sqrt(untied_x * untied_y)


COEFFICIENTS = {"pearson": pearson, "spearman": spearman, "kendall": kendall_tau_b}
