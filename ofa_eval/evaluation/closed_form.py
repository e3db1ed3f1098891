"""Protocol rows in closed form over every possible draw (`protocol --exact`)."""

from __future__ import annotations

from ofa_eval.common.errors import OfaError
from ofa_eval.statistics.exact import expected_selection_curve
from ofa_eval.evaluation.draws import possible_draws
from ofa_eval.evaluation.pool import Pool, pool_max_runs
from ofa_eval.evaluation.strategies import get_strategy, registered


def exact_rows(pool: Pool, pairs, max_runs: int) -> list[dict]:
    """Rows for strategies that have a closed form (the selection strategies).

    `std` is the standard deviation of the selected run's score over all draws; `draws` is the
    number of possible draws at that r (an exact integer, which can exceed 64 bits).
    """
    max_runs = pool_max_runs(pool, max_runs)
    pool.check_max_runs(max_runs)
    rows = []
    for strategy, variant in pairs:
        if not get_strategy(strategy).closed_form:
            exact = [s.name for s in registered().values() if s.closed_form]
            raise OfaError(f"--exact applies to {' and '.join(exact)}, not {strategy}")
        criterion, target = pool.criteria.get(variant, {}), pool.target_test.get(variant, {})
        run_ids = sorted(r for r in pool.config if r in criterion and r in target)
        if len(run_ids) < len(pool.config):
            raise OfaError(f"{pool.name}: {len(pool.config) - len(run_ids)} run(s) lack a "
                           f"{variant!r} criterion or target score")
        configs = {c: i for i, c in enumerate(pool.configurations)}
        curve = expected_selection_curve([configs[pool.config[r]] for r in run_ids],
                                         [criterion[r] for r in run_ids], [target[r] for r in run_ids], max_runs)
        counts = possible_draws([sum(pool.config[r] == c for r in run_ids) for c in pool.configurations], max_runs)
        rows += [{"task": pool.task, "model": pool.model, "strategy": strategy, "variant": variant, "runs": r + 1,
                  "mean": float(curve.mean[r]), "std": float(curve.std[r]), "draws": counts[r]}
                 for r in range(max_runs)]
    return rows
