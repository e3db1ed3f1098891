"""Closed-form expectations of selection strategies over every possible draw.

A draw at size r picks r distinct hyperparameter configurations uniformly at random among the C
configurations of a pool, and one seed (run) of each chosen configuration uniformly; a selection
strategy (Max SRC-DEV, Max TRG-DEV) keeps the run with the highest selection criterion, ties
broken uniformly at random, and reports its score. This module computes the mean and standard
deviation of the reported score over *all* draws exactly, with no enumeration and no sampling,
so that protocol curves can be compared with the paper's 10-draw estimates without Monte Carlo
noise.

For run i of configuration c with n_c seeds and criterion v_i,

    P(i selected at r) = r/C * 1/n_c * E[1{every other sampled criterion <= v_i} / (1 + K)]

where the expectation is over a uniformly random (r-1)-subset of the other configurations and
their seed choices, and K counts the sampled runs tied with v_i. Per configuration j, let a_ij
be the fraction of its seeds strictly below v_i and e_ij the fraction equal to v_i; the subset
sum of prod_j (a_ij + e_ij x) over (r-1)-subsets is a coefficient of prod_j (1 + y (a_ij + e_ij x)),
which a dynamic program over configurations computes for every run at once (state: subset size
m, tie count k). Running averages over subsets keep every number in [0, 1].

The standard deviation is the population standard deviation over draws (not the sample standard
deviation of a finite set of draws that the paper's tables report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SelectionMoments",
    "SelectionCurve",
    "selection_probabilities",
    "expected_selection",
    "expected_selection_curve",
]


@dataclass(frozen=True)
class SelectionMoments:
    """Mean and (population) standard deviation of the selected run's score over all draws."""

    mean: float
    std: float


@dataclass(frozen=True)
class SelectionCurve:
    """Moments for every draw size r = 1..max_r.

    `runs[k]` is r, `mean[k]` and `std[k]` its moments, and `probabilities[k, i]` the
    probability that run i is the one selected at that r (each row sums to 1).
    """

    runs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    probabilities: np.ndarray


def _validated_pool(config_ids, criterion):
    """Config indices 0..C-1 per run and the criterion as float arrays; raise on bad input."""
    criterion = np.asarray(criterion, dtype=float)
    config_ids = np.asarray(config_ids)
    if criterion.ndim != 1 or config_ids.shape != criterion.shape:
        raise ValueError(
            f"config_ids and criterion must be 1-D of the same length, got shapes "
            f"{config_ids.shape} and {criterion.shape}"
        )
    if criterion.size == 0:
        raise ValueError("the pool has no runs")
    if not np.all(np.isfinite(criterion)):
        raise ValueError("the selection criterion must be finite for every run")
    _, config_index = np.unique(config_ids, return_inverse=True)
    return config_index.reshape(-1), criterion


def _validated_score(score, n_runs):
    score = np.asarray(score, dtype=float)
    if score.shape != (n_runs,):
        raise ValueError(f"score must have shape ({n_runs},), got {score.shape}")
    if not np.all(np.isfinite(score)):
        raise ValueError("the score must be finite for every run")
    return score


def _check_draw_size(max_r, n_configs):
    if int(max_r) != max_r or max_r < 1:
        raise ValueError(f"r must be a positive integer, got {max_r!r}")
    if max_r > n_configs:
        raise ValueError(f"r = {max_r} exceeds the pool's {n_configs} configurations")
    return int(max_r)


def _below_and_tied_fractions(config_index, criterion, n_configs):
    """a[i, j], e[i, j]: fractions of configuration j's seeds below / equal to run i's criterion.

    Run i's own configuration gets a = e = 0, which removes it from the product of the
    dynamic program (its factor becomes 1).
    """
    membership = np.zeros((criterion.size, n_configs))
    membership[np.arange(criterion.size), config_index] = 1.0
    seeds_per_config = membership.sum(axis=0)
    below = (criterion[None, :] < criterion[:, None]).astype(float) @ membership
    tied = (criterion[None, :] == criterion[:, None]).astype(float) @ membership
    own = np.arange(criterion.size), config_index
    below[own] = 0.0
    tied[own] = 0.0
    return below / seeds_per_config, tied / seeds_per_config, seeds_per_config


def _tie_weighted_win_chance(below, tied, max_others):
    """w[i, m] = E[1{all m others <= v_i} / (1 + K_tied)] over uniform m-subsets of the others.

    `state[i, m, k]` is the average, over m-subsets of the configurations processed so far, of
    the probability that all m sampled runs are <= v_i with exactly k ties. Processing the j-th
    configuration (1-based) updates it as a running average:
        state[m, k] <- (j - m)/j * state[m, k] + m/j * (a_j state[m-1, k] + e_j state[m-1, k-1]).
    Run i's own configuration has a = e = 0, so the averages are over m-subsets of all C
    configurations; rescaling by C/(C - m) turns them into averages over the C - 1 others.
    """
    n_runs, n_configs = below.shape
    sizes = np.arange(max_others + 1)
    state = np.zeros((n_runs, max_others + 1, max_others + 1))
    state[:, 0, 0] = 1.0
    for j in range(1, n_configs + 1):
        keep = np.clip((j - sizes) / j, 0.0, None)[None, :, None]
        grow = (sizes[1:] / j)[None, :, None]
        previous = state[:, :-1, :]
        added = below[:, j - 1, None, None] * previous
        added[:, :, 1:] += tied[:, j - 1, None, None] * previous[:, :, :-1]
        state = keep * state
        state[:, 1:, :] += grow * added
    tie_share = 1.0 / (1.0 + sizes)
    subset_average = state @ tie_share
    return subset_average * (n_configs / (n_configs - sizes))[None, :]


def selection_probabilities(config_ids, criterion, max_r):
    """P(run i is selected) for every r = 1..max_r, shape (max_r, n_runs).

    `config_ids` labels each run's hyperparameter configuration (any comparable values);
    `criterion` is each run's selection criterion (higher is better).
    """
    config_index, criterion = _validated_pool(config_ids, criterion)
    n_configs = int(config_index.max()) + 1
    max_r = _check_draw_size(max_r, n_configs)
    below, tied, seeds_per_config = _below_and_tied_fractions(config_index, criterion, n_configs)
    win_chance = _tie_weighted_win_chance(below, tied, max_r - 1)
    runs = np.arange(1, max_r + 1)
    chosen = runs[:, None] / n_configs / seeds_per_config[config_index][None, :]
    return chosen * win_chance.T


def expected_selection_curve(config_ids, criterion, score, max_r) -> SelectionCurve:
    """Exact mean and std of the selected run's score for every draw size r = 1..max_r."""
    probabilities = selection_probabilities(config_ids, criterion, max_r)
    score = _validated_score(score, probabilities.shape[1])
    mean = probabilities @ score
    second_moment = probabilities @ score**2
    variance = np.clip(second_moment - mean**2, 0.0, None)
    runs = np.arange(1, probabilities.shape[0] + 1)
    return SelectionCurve(runs=runs, mean=mean, std=np.sqrt(variance), probabilities=probabilities)


def expected_selection(config_ids, criterion, score, r) -> SelectionMoments:
    """Exact mean and std, over all draws of r runs, of the score of the selected run.

    Raises ValueError if r exceeds the number of configurations.
    """
    curve = expected_selection_curve(config_ids, criterion, score, r)
    return SelectionMoments(mean=float(curve.mean[-1]), std=float(curve.std[-1]))
