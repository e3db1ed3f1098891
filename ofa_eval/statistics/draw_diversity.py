"""How many distinct draws a set of draws holds, and which draws are the same.

A draw at r is the SET of its first r runs: averaging ignores their order, and a selection
strategy depends on it only through ties. Small pools repeat draws: with one seed per
configuration, every draw at r = R holds all the runs, so ten draws are one comparison ten
times over. Intervals and tests must count such draws once; `protocol`, `compare` and
`correlate` report the count.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np


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
