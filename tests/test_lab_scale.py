"""Lab-sized pools: counts and results that outgrow 64 bits."""

import math

import numpy as np

from ofa_eval.evaluation import Pool, exact_rows, record_results
from ofa_eval.store.database import connected

LEARNING_RATES = (1e-5, 2e-5, 3e-5, 5e-5, 7e-5, 1e-4, 2e-4)
BATCH_SIZES = (16, 32, 64)
SEEDS = 30


def lab_pool() -> Pool:
    """7 learning rates x 3 batch sizes x 30 seeds = 630 runs with random scores."""
    rng = np.random.default_rng(0)
    configs = [(lr, bs) for lr in LEARNING_RATES for bs in BATCH_SIZES for _ in range(SEEDS)]
    run_ids = range(len(configs))
    criteria = {"src-dev": {r: float(rng.normal(80, 2)) for r in run_ids}}
    target = {"src-dev": {r: float(rng.normal(60, 5)) for r in run_ids}}
    return Pool("nli", "lab-model", {r: f"run-{r}" for r in run_ids}, dict(zip(run_ids, configs)), target, criteria)


def test_exact_draw_counts_beyond_64_bits_are_stored_exactly(tmp_path):
    rows = exact_rows(lab_pool(), [("max-src-dev", "src-dev")], 10)
    configurations = len(LEARNING_RATES) * len(BATCH_SIZES)
    expected = [math.comb(configurations, r) * SEEDS ** r for r in range(1, 11)]
    assert [row["draws"] for row in rows] == expected
    assert expected[-1] > 2 ** 63  # 208,275,270,840,000,000,000 at r = 10
    with connected(str(tmp_path / "store.duckdb")) as con:
        record_results(con, rows, {"draws": "exact"})
        stored = [count for (count,) in con.execute("SELECT draws FROM protocol_results ORDER BY runs").fetchall()]
    assert stored == expected
