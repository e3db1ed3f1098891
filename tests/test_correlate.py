"""`ofa-eval correlate` against scipy on brute-force curves of a synthetic release."""

import json

import numpy as np
import pytest
from scipy import stats

from synthetic_release import write_release
from test_protocol import brute_force_average, brute_force_selection


def curve(truth, task, strategy, variant, draws, max_r):
    rows = []
    for ids in draws:
        if strategy.startswith("max-"):
            rows.append([brute_force_selection(truth, task, strategy, variant, ids, r) for r in range(1, max_r + 1)])
        else:
            rows.append([brute_force_average(truth, task, variant, ids, r) for r in range(1, max_r + 1)])
    return np.array(rows)


def test_tracking_and_regret_match_scipy(cli, tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    truth = write_release(release, n_draws=5, max_r=4, seed=3)
    assert cli("import", "ofa-xlt", release).exit_code == 0
    result = cli("correlate", "--task", "nli", "--model", "tiny-model", "--strategy", "accumulative",
                 "--variant", "ca", "--replay", "-R", 4, "--format", "json", "--analysis", "tracking",
                 "--analysis", "regret", "--bootstrap", 500)
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    tracking, regret = output["tracking"], output["regret"]
    assert len(tracking) == 3 and len(regret) == 4
    draws = [truth.draws["nli"][k] for k in sorted(truth.draws["nli"])]
    x = curve(truth, "nli", "accumulative", "ca", draws, 4)
    y = curve(truth, "nli", "max-trg-dev", "trg-dev", draws, 4)
    reference = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}
    for row in tracking:
        assert row["value"] == pytest.approx(reference[row["coefficient"]](x.ravel(), y.ravel()).statistic, abs=1e-9)
        assert row["low"] <= row["value"] + 1e-9 and row["value"] - 1e-9 <= row["high"] or np.isnan(row["value"])
    for row in regret:
        assert row["value"] == pytest.approx((y - x)[:, row["runs"] - 1].mean(), abs=1e-9)
    stored = cli("sql", "SELECT count(*) AS n FROM analysis_results", "--format", "csv").stdout.split()
    assert int(stored[1]) >= len(tracking) + len(regret)
