"""The greedy soup strategy (Wortsman et al., 2022) against a from-the-definition reference.

The pool is built in memory: every run's source validation score, and for every possible
member set an averaged model with a source validation and a target test score, so the greedy
path can go anywhere. The reference walks Algorithm 1 of the soups paper literally.
"""

import itertools

import numpy as np
import pytest

from ofa_eval.common.keys import member_key
from ofa_eval.evaluation import DrawSet, MissingAverages, Pool, draw_scores, greedy_soup


def make_pool(n_runs=6, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    names = {i: f"run-{i}" for i in range(1, n_runs + 1)}
    source = {i: float(rng.integers(70, 75)) if ties else float(rng.normal(80, 2)) for i in names}
    target = {i: float(rng.normal(60, 3)) for i in names}
    pool = Pool("nli", "m", names, {i: (i * 1e-5, 32) for i in names}, {"ca": target}, {"ca": source},
                released=set(names))
    for size in range(2, n_runs + 1):
        for members in itertools.combinations(names, size):
            key = member_key([names[i] for i in members])
            pool.averages[("ca", key)] = float(rng.normal(62, 3))
            pool.average_source_dev[("ca", key)] = float(rng.integers(70, 75)) if ties else float(rng.normal(80.5, 2))
    return pool


def reference_greedy(pool, runs):
    """Algorithm 1: sort by held-out accuracy, keep an ingredient if the soup does not get worse."""
    def held_out(members):
        if len(members) == 1:
            return pool.criteria["ca"][members[0]]
        return pool.average_source_dev[("ca", member_key([pool.external_id[i] for i in members]))]

    ingredients = sorted(runs, key=lambda i: (-pool.criteria["ca"][i], runs.index(i)))
    soup = [ingredients[0]]
    for ingredient in ingredients[1:]:
        if held_out(soup + [ingredient]) >= held_out(soup):
            soup.append(ingredient)
    if len(soup) == 1:
        return pool.target_test["ca"][soup[0]]
    return pool.averages[("ca", member_key([pool.external_id[i] for i in soup]))]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_soup_scores_follow_the_algorithm(seed, ties):
    pool = make_pool(seed=seed, ties=ties)
    rng = np.random.default_rng(100 + seed)
    draws = DrawSet([str(d) for d in range(8)], [list(rng.permutation(6) + 1) for _ in range(8)], {})
    draws = DrawSet(draws.labels, [[int(x) for x in runs] for runs in draws.runs], {})
    scores = draw_scores(pool, draws, "greedy-soup", "ca", 6)
    expected = [[reference_greedy(pool, runs[:r]) for r in range(1, 7)] for runs in draws.runs]
    assert scores == pytest.approx(np.array(expected), abs=1e-12)


def test_a_greedy_soup_stops_at_the_first_unscored_candidate():
    pool = make_pool()
    best_first = sorted(pool.criteria["ca"], key=lambda i: -pool.criteria["ca"][i])
    pair = [best_first[0], best_first[1]]
    del pool.average_source_dev[("ca", member_key([pool.external_id[i] for i in pair]))]
    path = greedy_soup(pool, "ca", list(pool.external_id))
    assert path.members == [best_first[0]] and path.needs == pair
    with pytest.raises(MissingAverages) as gap:
        draw_scores(pool, DrawSet(["0"], [list(pool.external_id)], {}), "greedy-soup", "ca", 6)
    assert ("ca", [pool.external_id[i] for i in pair]) in gap.value.member_sets


def test_greedy_soup_is_not_among_the_paper_strategies_by_default():
    from ofa_eval.evaluation import strategy_pairs

    assert all(strategy != "greedy-soup" for strategy, _ in strategy_pairs((), (), 5))
    assert strategy_pairs(("greedy-soup",), (), 5) == [("greedy-soup", v) for v in ("last", "src-dev", "ca")]
