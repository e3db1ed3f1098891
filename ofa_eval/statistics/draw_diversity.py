"""How many distinct draws a set of draws holds, and which draws are the same.

A draw at r is the SET of its first r runs: averaging ignores their order, and a selection
strategy depends on it only through ties. Small pools repeat draws: with one seed per
configuration, every draw at r = R holds all the runs, so ten draws are one comparison ten
times over. Intervals and tests must count such draws once (`group_resample_counts`: a
bootstrap that resamples distinct draws, each with all its copies); `protocol`, `compare` and
`correlate` report the count.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

from ofa_eval.statistics import bootstrap


def _first_appearance(keys: Iterable[Hashable]) -> np.ndarray:
    """Each key's index among the distinct keys, numbered in order of first appearance."""
    seen: dict = {}
    return np.array([seen.setdefault(key, len(seen)) for key in keys], dtype=np.int64)


def draw_groups(draws_runs: list[list[int]], r: int, ordered: bool = False) -> np.ndarray:
    """Per draw, which distinct draw at r it is (0, 1, ... in order of first appearance).

    Unordered (the default) compares the sets of the first r runs; `ordered` compares the
    run sequences, for analyses that follow a draw across r.
    """
    kind = tuple if ordered else frozenset
    return _first_appearance(kind(runs[:r]) for runs in draws_runs)


def n_groups(groups: np.ndarray) -> int:
    """How many distinct draws `groups` (from `draw_groups`) holds."""
    return int(groups.max()) + 1 if groups.size else 0


def paired_groups(*groups: np.ndarray) -> np.ndarray:
    """Groups of draws that are the same in every one of `groups` (e.g. the draws of A and of B)."""
    return _first_appearance(zip(*(g.tolist() for g in groups)))


def distinct_draws(draws_runs: list[list[int]], max_runs: int) -> list[int]:
    """The number of distinct sets of runs among the draws at r = 1..max_runs."""
    return [len(set(draw_groups(draws_runs, r).tolist())) for r in range(1, max_runs + 1)]


def describe_repeats(counts: list[int], n_draws: int) -> str | None:
    """One line on where draws repeat ("at r = 4 the 10 draws hold 1 distinct set of runs"), or None.

    Names the largest r with repeats in full and the other such r by their counts.
    """
    repeated = [(r, k) for r, k in enumerate(counts, 1) if k < n_draws]
    if not repeated:
        return None
    r, k = repeated[-1]
    line = f"at r = {r} the {n_draws} draws hold {k} distinct set{'s' if k != 1 else ''} of runs"
    others = ", ".join(f"r = {r}: {k}" for r, k in repeated[:-1])
    return f"{line} ({others})" if others else line


def group_resample_counts(groups: np.ndarray, rng, n_resamples: int) -> np.ndarray:
    """(n_resamples, n_draws): how often each draw enters a bootstrap resample that picks distinct
    draws (groups of identical draws) with replacement, each with all of its copies."""
    picked = bootstrap.resample_counts(bootstrap.paired_indices(n_groups(groups), n_resamples, rng),
                                       n_groups(groups))
    return picked[:, groups]


def grouped_bootstrap_means(values: np.ndarray, groups: np.ndarray, rng, n_resamples: int) -> np.ndarray:
    """Bootstrap means over draws of `values` (n_draws, ...), resampling distinct draws: (n_resamples, ...).

    A draw drawn k times counts once as evidence; the resampled statistic is still the mean over
    draws (copies included), so the interval is about the mean `protocol` reports.
    """
    counts = group_resample_counts(groups, rng, n_resamples)
    totals = counts.sum(axis=1).reshape((-1,) + (1,) * (values.ndim - 1))
    return np.tensordot(counts, values, axes=1) / totals


def repeated_draw_intervals(draws_runs: list[list[int]], scores: np.ndarray, level: float, n_resamples: int,
                            rng_for) -> dict[int, tuple[float, float]]:
    """{column r - 1: (low, high)} for each r of `scores` (n_draws, R) at which draws repeat: the
    percentile interval of the mean over resampled distinct draws, (nan, nan) at one distinct
    draw. Columns without repeats are left to the caller's plain bootstrap. `rng_for()` gives
    the generator for each r resampled here."""
    intervals = {}
    for r in range(scores.shape[1]):
        groups = draw_groups(draws_runs, r + 1)
        distinct = n_groups(groups)
        if distinct == len(groups):
            continue
        if distinct == 1:
            intervals[r] = (np.nan, np.nan)
            continue
        means = grouped_bootstrap_means(scores[:, r], groups, rng_for(), n_resamples)
        low, high = bootstrap.percentile_interval(means, level)
        intervals[r] = (float(low), float(high))
    return intervals
