"""Resampling options, and the bootstrap interval of each protocol mean (`protocol --ci`).

One `ResamplingOptions` object carries what every resampling command needs (level, number of
resamples, method, seed, and what is resampled), so `protocol`, `compare`, `correlate` and
`report` share it instead of loose parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ofa_eval.statistics.bootstrap import bootstrap_ci
from ofa_eval.statistics.draw_diversity import repeated_draw_intervals
from ofa_eval.common.errors import OfaError
from ofa_eval.evaluation.pool import Pool

RESAMPLING_LEVELS = ("draws", "draws+examples")


@dataclass(frozen=True)
class ResamplingOptions:
    """A bootstrap at confidence `level` with `n_resamples` resamples from `seed`.

    `resample`: 'draws' resamples whole draws; 'draws+examples' also resamples the target test
    examples through their stored per-example statistics (`ofa_eval.evaluation.joint_bootstrap`).
    """

    level: float = 0.95
    n_resamples: int = 10_000
    method: str = "percentile"
    seed: int = 0
    resample: str = "draws"

    def __post_init__(self):
        if not 0 < self.level < 1 or self.n_resamples < 10:
            raise OfaError("--ci must be between 0 and 100 and --bootstrap at least 10")
        if self.resample not in RESAMPLING_LEVELS:
            raise OfaError(f"unknown resampling {self.resample!r} (known: {', '.join(RESAMPLING_LEVELS)})")
        if self.resample == "draws+examples" and self.method != "percentile":
            raise OfaError("--resample draws+examples gives percentile intervals only (BCa's jackknife "
                           "has no two-level analogue here)")

    def settings(self) -> dict:
        """What is stored with a result so that it can be reproduced."""
        return asdict(self)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


def interval_bounds(con, pool: Pool, curves: dict, max_runs: int, options: ResamplingOptions) -> dict:
    """{pair: (low, high)} over r: the bootstrap interval of each pair's mean.

    Identical draws are one piece of evidence: where draws repeat at r, the distinct draws are
    resampled (each with all its copies), and where every draw at r holds the same runs there is
    no interval over draws (NaN at that r).
    """
    if any(len(draws.runs) < 2 for draws, _ in curves.values()):
        raise OfaError(f"{pool.name}: --ci resamples draws and needs at least 2 of them (--draws 2 or more)")
    if options.resample == "draws+examples":
        from ofa_eval.evaluation.joint_bootstrap import joint_intervals  # polars: loaded only here

        return joint_intervals(con, pool, curves, max_runs, options)
    return {pair: _mean_intervals(draws.runs, scores, options) for pair, (draws, scores) in curves.items()}


def _mean_intervals(draws_runs: list[list[int]], scores: np.ndarray, options: ResamplingOptions):
    """Bootstrap over draws (the same resamples for every r where no draws repeat, so they stay
    paired); at an r where draws repeat, a percentile interval over distinct draws."""
    result = bootstrap_ci(scores.T, np.mean, n_resamples=options.n_resamples, confidence_level=options.level,
                          method=options.method, rng=options.rng(), keep_distribution=False)
    low, high = np.array(result.low, dtype=float, ndmin=1), np.array(result.high, dtype=float, ndmin=1)
    for r, interval in repeated_draw_intervals(draws_runs, scores, options.level, options.n_resamples,
                                               options.rng).items():
        low[r], high[r] = interval
    return low, high
