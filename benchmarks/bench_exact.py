"""Closed-form selection moments (ofa_eval.statistics.exact) against the two ways of getting them without it.

- Paper-sized pool (21 configurations x 3 seeds, r = 1..10): the exact curve against a Monte
  Carlo estimate of it, --draws random draws per r (the protocol's sampling, simulated directly);
  the Monte Carlo mean is still off by about std / sqrt(draws), the exact one is not.
- Small pool (8 configurations x 2 seeds, r = 1..8), where enumerating every draw is feasible:
  the exact curve against brute-force enumeration (the test suite's reference).

Prints the median wall time of each (after one warm-up) and the baseline's time as a multiple
of ofa_eval's; writes no files. Takes a few seconds:

    python benchmarks/bench_exact.py [--repeat 3] [--draws 100000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from ofa_eval.statistics.exact import expected_selection_curve  # noqa: E402
from references import brute_force_probabilities, monte_carlo_selected_scores  # noqa: E402
from timing import median_seconds  # noqa: E402


def pool(n_configs, seeds, seed):
    rng = np.random.default_rng(seed)
    config_ids = np.repeat(np.arange(n_configs), seeds)
    return config_ids, rng.normal(size=config_ids.size), rng.normal(70.0, 5.0, size=config_ids.size)


def report(name, exact_seconds, baseline_name, baseline_seconds, agreement):
    print(f"{name}")
    print(f"  ofa_eval.statistics.exact curve      {exact_seconds * 1e3:10.2f} ms")
    print(f"  {baseline_name:<25} {baseline_seconds * 1e3:10.2f} ms  ({baseline_seconds / exact_seconds:,.0f}x)")
    print(f"  {agreement}")


def paper_sized(repeat, n_draws):
    config_ids, criterion, score = pool(21, 3, seed=3)
    max_r = 10
    rng = np.random.default_rng(0)
    exact = expected_selection_curve(config_ids, criterion, score, max_r)

    def monte_carlo():
        return [monte_carlo_selected_scores(config_ids, criterion, score, r, n_draws, rng).mean()
                for r in range(1, max_r + 1)]

    gap = np.max(np.abs(np.array(monte_carlo()) - exact.mean) / (exact.std / np.sqrt(n_draws)))
    report(f"paper-sized pool: 21 configurations x 3 seeds, r = 1..{max_r}",
           median_seconds(lambda: expected_selection_curve(config_ids, criterion, score, max_r), repeat),
           f"Monte Carlo, {n_draws:,} draws", median_seconds(monte_carlo, repeat),
           f"largest Monte Carlo mean error: {gap:.1f} standard errors")


def enumerable(repeat):
    config_ids, criterion, score = pool(8, 2, seed=4)
    max_r = 8
    exact = expected_selection_curve(config_ids, criterion, score, max_r)

    def brute_force():
        return np.array([brute_force_probabilities(config_ids, criterion, r) for r in range(1, max_r + 1)])

    difference = np.max(np.abs(brute_force() - exact.probabilities))
    report(f"small pool: 8 configurations x 2 seeds, r = 1..{max_r}",
           median_seconds(lambda: expected_selection_curve(config_ids, criterion, score, max_r), repeat),
           "brute-force enumeration", median_seconds(brute_force, repeat),
           f"largest probability difference: {difference:.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per contender (median reported)")
    parser.add_argument("--draws", type=int, default=100_000, help="Monte Carlo draws per r")
    args = parser.parse_args()
    paper_sized(args.repeat, args.draws)
    enumerable(args.repeat)


if __name__ == "__main__":
    main()
