"""Statistics with no knowledge of stores, pools or tasks: numpy arrays in, numbers out.

- `bootstrap`: resampling indices, percentile and BCa intervals, resampled sums for ratio metrics,
  the two-level (runs x examples) primitives the joint bootstrap is built from;
- `exact`: closed-form expectations of selection over every possible draw;
- `correlation`: Pearson, Spearman and Kendall's tau-b with ties;
- `draw_diversity`: which draws hold the same runs, so that intervals count them once.

The joint draws x examples bootstrap of the protocol (`ofa_eval.evaluation.joint_bootstrap`) applies
these primitives to a pool's stored per-example statistics.
"""

from ofa_eval.statistics import bootstrap, correlation, draw_diversity, exact
from ofa_eval.statistics.bootstrap import bootstrap_ci, percentile_interval
from ofa_eval.statistics.correlation import kendall_tau_b, pearson, spearman
from ofa_eval.statistics.draw_diversity import distinct_draws, draw_groups
from ofa_eval.statistics.exact import expected_selection

__all__ = ["bootstrap", "bootstrap_ci", "correlation", "distinct_draws", "draw_diversity", "draw_groups", "exact",
           "expected_selection", "kendall_tau_b", "pearson", "percentile_interval", "spearman"]
