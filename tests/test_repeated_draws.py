"""Identical draws are one piece of evidence in `protocol --ci` and in the joint draws x examples
bootstrap: checked against plain loops that resample distinct draws, and end to end."""

from __future__ import annotations

import numpy as np
import pytest

from ofa_eval.evaluation import ResamplingOptions
from ofa_eval.evaluation.joint_bootstrap import JointCells, draw_weights
from ofa_eval.evaluation.resampling import _mean_intervals

B = 400


def loop_grouped_interval(draws_runs, values, r, seed, level=0.95):
    """Resample the distinct draws at r (sets of their first r runs) with replacement, each with all
    its copies, and take the percentile interval of the mean over the resampled draws."""
    distinct = list(dict.fromkeys(frozenset(runs[:r]) for runs in draws_runs))
    members = [[d for d, runs in enumerate(draws_runs) if frozenset(runs[:r]) == key] for key in distinct]
    picks = np.random.default_rng(seed).integers(0, len(distinct), size=(B, len(distinct)))
    means = [np.mean([values[d] for g in row for d in members[g]]) for row in picks]
    return tuple(np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2]))


def ten_copies_and_one():
    """Ten draws of the same runs and one other draw at r = 1, all different at r = 2."""
    draws = [[7, i] for i in range(10)] + [[3, 10]]
    scores = np.random.default_rng(1).normal(70, 2, size=(11, 2))
    scores[:10, 0] = 71.0  # the same run, the same score
    return draws, scores


def test_repeated_draws_are_resampled_as_one():
    draws, scores = ten_copies_and_one()
    options = ResamplingOptions(n_resamples=B, seed=5)
    low, high = _mean_intervals(draws, scores, options)
    assert (low[0], high[0]) == pytest.approx(loop_grouped_interval(draws, scores[:, 0], 1, seed=5), abs=1e-9)
    # not the naive bootstrap over 11 "independent" draws
    naive = np.random.default_rng(5).integers(0, 11, size=(B, 11))
    naive_low, naive_high = np.percentile(scores[naive, 0].mean(axis=1), [2.5, 97.5])
    assert (high[0] - low[0]) > 1.5 * (naive_high - naive_low)


def test_without_repeats_the_interval_is_the_plain_bootstrap():
    draws, scores = ten_copies_and_one()
    options = ResamplingOptions(n_resamples=B, seed=5)
    low, high = _mean_intervals(draws, scores, options)
    picks = np.random.default_rng(5).integers(0, 11, size=(B, 11))
    assert (low[1], high[1]) == pytest.approx(tuple(np.percentile(scores[picks, 1].mean(axis=1), [2.5, 97.5])),
                                              abs=1e-9)


def test_report_bands_resample_distinct_draws():
    from ofa_eval.results.report import mean_bands

    draws, scores = ten_copies_and_one()
    mean, low, high = mean_bands(draws, scores, np.random.default_rng(9), ResamplingOptions(n_resamples=B))
    reference = np.random.default_rng(9)
    plain = scores[reference.integers(0, 11, size=(B, 11))].mean(axis=1)  # the draws' resamples, every r
    assert (low[0], high[0]) == pytest.approx(loop_grouped_interval(draws, scores[:, 0], 1, seed=reference), abs=1e-9)
    assert (low[1], high[1]) == pytest.approx(tuple(np.percentile(plain[:, 1], [2.5, 97.5])), abs=1e-9)
    assert mean == pytest.approx(scores.mean(axis=0))


def test_one_distinct_draw_has_no_band_in_the_report():
    from ofa_eval.results.report import mean_bands

    _, low, high = mean_bands([[4, 1], [4, 2]], np.array([[70.0, 71], [70, 72]]), np.random.default_rng(0),
                              ResamplingOptions(n_resamples=B))
    assert np.isnan(low[0]) and np.isnan(high[0]) and high[1] > low[1]


def test_one_distinct_draw_has_no_interval():
    draws = [[4, 1], [4, 2], [4, 3]]
    low, high = _mean_intervals(draws, np.array([[70.0, 71], [70, 72], [70, 73]]), ResamplingOptions(seed=0))
    assert np.isnan(low[0]) and np.isnan(high[0]) and not np.isnan(low[1])


def test_joint_draw_weights_resample_distinct_draws_at_each_r():
    draws, scores = ten_copies_and_one()
    rng = np.random.default_rng(3)
    weights = draw_weights([draws, draws], 2, B, rng)
    # r = 2: every draw distinct, plain counts of a bootstrap over the 11 draws
    assert (weights[:, :, 1].sum(axis=1) == 11).all()
    # r = 1: two groups; each resample holds a group with all its copies
    at_one = weights[:, :, 0]
    assert (at_one[:, :10] == at_one[:, :1]).all()  # the ten copies enter together
    assert set(np.unique(at_one.sum(axis=1))) <= {2, 11, 20}  # {1+1, 10+1, 10+10} copies
    cells = JointCells({}, weights)
    means = cells.mean(np.broadcast_to(scores, (B, 11, 2)))
    reference = [(row[:10] * scores[:10, 0]).sum() / row.sum() + row[10] * scores[10, 0] / row.sum()
                 for row in at_one]
    assert means[:, 0] == pytest.approx(reference, abs=1e-12)


def test_protocol_ci_counts_repeated_draws_once(cli, tmp_path):
    from synthetic_runs import write_grid

    write_grid(tmp_path / "runs")
    assert cli("ingest", tmp_path / "runs", "--quiet").exit_code == 0
    result = cli("protocol", "--strategy", "max-src-dev", "--variant", "last", "--draws", "10", "--seed", "0",
                 "-R", "2", "--ci", "95", "--bootstrap", "500", "--format", "csv")
    assert result.exit_code == 0, result.output
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    at_one = [row for row in rows if row["runs"] == "1"][0]
    # 10 draws of 1 run out of 12: some repeat, and the note says so
    assert int(at_one["distinct_draws"]) < 10 and at_one["ci_low"] != ""
    assert "draws repeat" in result.stderr
