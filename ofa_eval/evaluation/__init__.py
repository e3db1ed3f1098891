"""The resampling protocol of the paper: pools, draws, strategies, curves and their records.

- `pool`: what the store knows about one (task, model), and the weight files of averaged models;
- `draws`: sampled or recorded draws of runs with distinct configurations;
- `strategies`: the strategy registry (selection, averaging, soups, greedy soups);
- `curves`: each pair's scores over draws and r, summarized into protocol rows;
- `resampling`: the options of every bootstrap, and the intervals of protocol means;
- `closed_form`: selection strategies' expectations over every possible draw (`--exact`);
- `recording`: storing results with the settings that produced them.

The names below are the package's public interface.
"""

from ofa_eval.evaluation.closed_form import exact_rows
from ofa_eval.evaluation.curves import (Skipped, available_curves, compute_protocol, describe_missing, draw_scores,
                                      pair_curves, protocol_rows, summarize)
from ofa_eval.evaluation.draws import DrawOptions, DrawSet, possible_draws, recorded_draws, sample_draws
from ofa_eval.evaluation.pool import (DEFAULT_MAX_RUNS, AveragedMembers, IncompletePool, Pool, load_pool,
                                    pool_max_runs, pools_in_store)
from ofa_eval.evaluation.recording import record_analysis, record_results
from ofa_eval.evaluation.resampling import RESAMPLING_LEVELS, ResamplingOptions, interval_bounds
from ofa_eval.evaluation.strategies import (STRATEGIES, GreedyPath, MissingAverages, Model, PlotStyle, Strategy,
                                          curve_models, get_strategy, greedy_soup, register_strategy, registered,
                                          selected_runs, strategy_pairs, unregister_strategy)

__all__ = [
    "DEFAULT_MAX_RUNS", "RESAMPLING_LEVELS", "STRATEGIES", "AveragedMembers", "DrawOptions", "DrawSet", "GreedyPath",
    "IncompletePool", "MissingAverages", "Model", "PlotStyle", "Pool", "ResamplingOptions", "Skipped", "Strategy",
    "available_curves", "compute_protocol", "curve_models", "describe_missing", "draw_scores", "exact_rows",
    "get_strategy", "greedy_soup", "interval_bounds", "load_pool", "pair_curves", "pool_max_runs", "pools_in_store",
    "possible_draws", "protocol_rows", "record_analysis", "record_results", "recorded_draws", "register_strategy",
    "registered", "sample_draws", "selected_runs", "strategy_pairs", "summarize", "unregister_strategy",
]
