"""`ofa-eval correlate` against scipy on brute-force curves of a synthetic release."""

import json

import numpy as np
import pytest
from scipy import stats

from references import brute_force_curves, recorded_draws


def test_tracking_and_regret_match_scipy(import_synthetic_release):
    cli = import_synthetic_release(n_draws=5, max_r=4, seed=3)
    result = cli("correlate", "--task", "nli", "--model", "tiny-model", "--strategy", "accumulative",
                 "--variant", "ca", "--replay", "-R", 4, "--format", "json", "--analysis", "tracking",
                 "--analysis", "regret", "--bootstrap", 500)
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    tracking, regret = output["tracking"], output["regret"]
    assert len(tracking) == 3 and len(regret) == 4
    draws = recorded_draws(cli.truth, "nli")
    x = brute_force_curves(cli.truth, "nli", "accumulative", "ca", draws, 4)
    y = brute_force_curves(cli.truth, "nli", "max-trg-dev", "trg-dev", draws, 4)
    reference = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}
    for row in tracking:
        assert row["value"] == pytest.approx(reference[row["coefficient"]](x.ravel(), y.ravel()).statistic, abs=1e-9)
        assert row["low"] <= row["value"] + 1e-9 and row["value"] - 1e-9 <= row["high"] or np.isnan(row["value"])
    for row in regret:
        assert row["value"] == pytest.approx((y - x)[:, row["runs"] - 1].mean(), abs=1e-9)
    stored = cli("sql", "SELECT count(*) AS n FROM analysis_results", "--format", "csv").stdout.split()
    assert int(stored[1]) >= len(tracking) + len(regret)
