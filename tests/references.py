"""Reference implementations that tests (and benchmarks/bench_exact.py) compare ofa_eval against.

Plain Python and numpy only, nothing from ofa_eval: brute force over a synthetic release's truth
(tests/synthetic_release.py), enumeration of every draw of a pool, and the protocol's random
draws simulated directly.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np

VARIANT_COLUMN = {"last": "last", "src-dev": "oracle-source", "ca": "avg-ckpt", "trg-dev": "oracle"}
SELECTION_STRATEGIES = ("max-src-dev", "max-trg-dev")
SOUP_RECIPE = "soup-top5"  # the protocol's default soup size, --soup-k 5


def recorded_draws(truth, task):
    """A synthetic release's recorded draws of `task` (lists of run ids), in label order."""
    return [truth.draws[task][label] for label in sorted(truth.draws[task])]


def brute_force_selection(truth, task, strategy, variant, draw_ids, r):
    """Plain Python: the target score of the first-best run among the first r of a draw."""
    runs = truth.runs[task]
    best = None
    for run_id in draw_ids[:r]:
        key = "target_dev" if strategy == "max-trg-dev" else f"source_dev_{VARIANT_COLUMN[variant]}"
        if best is None or runs[run_id][key] > runs[best][key]:
            best = run_id
    return runs[best][f"target_{VARIANT_COLUMN[variant]}"]


def brute_force_average(truth, task, recipe, draw_ids, r):
    """The released target score of the model averaged (with `recipe`) from the first r runs of a draw."""
    return truth.averages[task][(recipe, tuple(sorted(draw_ids[:r])))]


def brute_force_score(truth, task, strategy, variant, draw_ids, r):
    """One draw's score at r runs for any strategy of the paper."""
    if strategy in SELECTION_STRATEGIES:
        return brute_force_selection(truth, task, strategy, variant, draw_ids, r)
    recipe = SOUP_RECIPE if strategy == "soup" else variant
    return brute_force_average(truth, task, recipe, draw_ids, r)


def brute_force_curves(truth, task, strategy, variant, draws, max_r):
    """Scores of shape (n_draws, max_r): every draw at r = 1..max_r."""
    return np.array([[brute_force_score(truth, task, strategy, variant, ids, r) for r in range(1, max_r + 1)]
                     for ids in draws])


def brute_force_mean_std(truth, task, strategy, variant, draws, r):
    """Mean and sample std over draws at r runs (std None for a single draw), as the protocol reports."""
    values = [brute_force_score(truth, task, strategy, variant, ids, r) for ids in draws]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def brute_force_probabilities(config_ids, criterion, r):
    """P(run i is selected at r), by enumerating every r-subset of configurations and every seed
    choice; ties split uniformly."""
    configs = sorted(set(config_ids.tolist()))
    runs_of = {c: np.flatnonzero(config_ids == c) for c in configs}
    probabilities = np.zeros(config_ids.size)
    subsets = list(itertools.combinations(configs, r))
    for subset in subsets:
        weight_subset = 1.0 / len(subsets)
        for picked in itertools.product(*(runs_of[c] for c in subset)):
            weight = weight_subset / math.prod(len(runs_of[c]) for c in subset)
            values = criterion[list(picked)]
            winners = [run for run, value in zip(picked, values) if value == values.max()]
            for run in winners:
                probabilities[run] += weight / len(winners)
    return probabilities


def brute_force_moments(config_ids, criterion, score, r):
    """Mean and population std over every draw of the selected run's score, by enumeration."""
    probabilities = brute_force_probabilities(config_ids, criterion, r)
    mean = probabilities @ score
    return mean, math.sqrt(max(probabilities @ score**2 - mean**2, 0.0))


def monte_carlo_selected_scores(config_ids, criterion, score, r, n_draws, rng):
    """The protocol as the paper runs it: r random distinct configurations in random order, a
    uniform seed of each, the first run with the highest criterion wins (random order makes
    this a uniform tie-break). Returns the selected run's score of every draw."""
    configs, config_index = np.unique(config_ids, return_inverse=True)
    runs_by_config = [np.flatnonzero(config_index == c) for c in range(configs.size)]
    seeds = np.array([runs.size for runs in runs_by_config])
    offsets = np.concatenate([[0], np.cumsum(seeds)[:-1]])
    run_of = np.concatenate(runs_by_config)
    order = np.argsort(rng.random((n_draws, configs.size)), axis=1)[:, :r]
    seed = np.floor(rng.random(order.shape) * seeds[order]).astype(int)
    runs = run_of[offsets[order] + seed]
    selected = runs[np.arange(n_draws), np.argmax(criterion[runs], axis=1)]
    return score[selected]
