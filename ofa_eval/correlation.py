"""Vectorised correlation coefficients over many resamples at once.

Each function takes arrays of shape (..., n) and correlates along the last axis, so a bootstrap
evaluates all its resamples in one call: Pearson's r, Spearman's rho (Pearson on average ranks)
and Kendall's tau-b (ties handled as in scipy.stats.kendalltau).
"""

from __future__ import annotations

import numpy as np


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=-1) / denominator


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their average rank."""
    order = np.argsort(values, axis=-1, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=-1)
    n = values.shape[-1]
    new_group = np.concatenate([np.ones(values.shape[:-1] + (1,), bool),
                                sorted_values[..., 1:] != sorted_values[..., :-1]], axis=-1)
    group = np.cumsum(new_group, axis=-1)
    positions = np.broadcast_to(np.arange(1, n + 1, dtype=float), values.shape)
    # average position within each tie group: group sums / group sizes, via a flat bincount
    flat_group = (group + (np.arange(int(np.prod(values.shape[:-1]))).reshape(values.shape[:-1] + (1,)) * (n + 1)))
    sums = np.bincount(flat_group.ravel(), weights=positions.ravel())
    counts = np.bincount(flat_group.ravel())
    averaged_sorted = (sums[flat_group] / counts[flat_group]).reshape(values.shape)
    ranks = np.empty_like(averaged_sorted)
    np.put_along_axis(ranks, order, averaged_sorted, axis=-1)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return pearson(average_ranks(x), average_ranks(y))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    i, j = np.triu_indices(n, k=1)
    dx = np.sign(x[..., j] - x[..., i])
    dy = np.sign(y[..., j] - y[..., i])
    concordance = (dx * dy).sum(axis=-1)
    untied_x = (dx != 0).sum(axis=-1)
    untied_y = (dy != 0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return concordance / np.sqrt(untied_x * untied_y)


COEFFICIENTS = {"pearson": pearson, "spearman": spearman, "kendall": kendall_tau_b}
