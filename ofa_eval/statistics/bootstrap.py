"""Vectorised, paired bootstrap confidence intervals.

Every resample is a row of an index array of shape (n_resamples, n), drawn in one shot; the
statistic sees all rows at once (`statistic(resampled, axis=-1)` on an array of shape
(..., rows, n)), in chunks only to bound memory. Data of shape (..., n) gets one interval per
leading element (every r of a table, every strategy) from the SAME resample indices, so
intervals and differences stay paired. The definitions follow `scipy.stats.bootstrap`
(percentile and BCa intervals, linear quantiles, jackknife acceleration, standard error with
ddof=1); with the same generator state and no strata, `paired_indices` draws exactly the indices
scipy draws.

Helpers:
- `paired_indices`: resample indices, optionally stratified (each stratum resampled within
  itself, so stratum sizes are kept), reusable across statistics;
- `resample_counts` / `resampled_sums`: how often each observation appears in each resample,
  and sums over every resample as one matrix product (the fast path for means and ratios of
  sums, e.g. micro F1 from per-example counts; see benchmarks/results/bootstrap-cpu.md);
  `drawn_sums` does the same for freshly drawn resamples, chunk by chunk (bounded memory);
- `two_level_indices` / `two_level_sums`: joint resampling of runs and of examples (one example
  resample shared by every run), for per-example statistics of many runs.

This module imports only numpy: scipy is not needed (normal quantiles come from the standard
library).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "BootstrapResult",
    "TwoLevelIndices",
    "bootstrap_ci",
    "paired_indices",
    "percentile_interval",
    "resample_counts",
    "resampled_sums",
    "drawn_sums",
    "two_level_indices",
    "two_level_sums",
]

METHODS = ("percentile", "bca")
DEFAULT_MAX_ELEMENTS = 2**24  # resampled values materialised at once (128 MiB of float64)


@dataclass(frozen=True)
class BootstrapResult:
    """Interval endpoints and standard error, shape (...) of the data's leading axes.

    `distribution` is the bootstrap distribution, shape (..., n_resamples) like scipy's
    `bootstrap_distribution` (None when not kept).
    """

    low: np.ndarray | float
    high: np.ndarray | float
    standard_error: np.ndarray | float
    distribution: np.ndarray | None = None


@dataclass(frozen=True)
class TwoLevelIndices:
    """Joint resample of runs and examples: row b resamples runs with `runs[b]` (n_runs) and,
    for every run alike, examples with `examples[b]` (n_examples)."""

    runs: np.ndarray
    examples: np.ndarray


def _generator(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def paired_indices(n, n_resamples, rng=None, strata=None) -> np.ndarray:
    """Bootstrap indices of shape (n_resamples, n) into n observations.

    Without strata each row is n draws with replacement from 0..n-1. With `strata` (one label
    per observation), the positions of each stratum are refilled with draws from that stratum
    only, so every resample keeps each stratum's size (and positions).
    """
    rng = _generator(rng)
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n))
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"strata must have one label per observation (shape ({n},)), got {strata.shape}")
    indices = np.empty((n_resamples, n), dtype=np.int64)
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        indices[:, members] = members[rng.integers(0, members.size, size=(n_resamples, members.size))]
    return indices


def resample_counts(indices, n, dtype=float) -> np.ndarray:
    """counts[b, i]: how many times observation i appears in resample b (shape (B, n)).

    A sum over a resample is then a matrix product: `counts @ values` for values of shape (n, ...).
    """
    indices = np.asarray(indices)
    counts = np.empty((indices.shape[0], n), dtype=dtype)
    for row, picks in enumerate(indices):  # one small bincount a row stays in cache: 15x one flat bincount
        counts[row] = np.bincount(picks, minlength=n)
    return counts


def _exact_product_dtype(data: np.ndarray, n: int):
    """float32 where every resampled sum of `data` is exact in it (integer statistics, such as 0/1
    correctness or span counts, whose sums stay below 2**24): half the memory, twice the speed of
    the product; float64 otherwise."""
    largest = float(np.abs(data).max(initial=0.0))
    if n * largest < 2**24 and np.array_equal(data, np.round(data)):
        return np.float32
    return np.float64


def drawn_sums(stats: dict[str, np.ndarray], n_resamples: int, rng, *, chunk_rows: int = 1000) -> dict:
    """{name: sums (..., n_resamples)} of each statistic (..., n) over `n_resamples` resamples of its
    n observations, every statistic under the same resamples.

    The resamples are those of `paired_indices(n, n_resamples, rng)` (numpy draws the same
    integers in chunks of rows as in one call), drawn `chunk_rows` at a time so that memory stays
    bounded by the chunk, not by n_resamples x n.
    """
    rng = _generator(rng)
    n = next(iter(stats.values())).shape[-1]
    operands = {}
    for name, values in stats.items():
        values = np.asarray(values, dtype=float)
        dtype = _exact_product_dtype(values, n)
        operands[name] = (values.astype(dtype, copy=False), dtype)
    parts: dict[str, list] = {name: [] for name in stats}
    for start in range(0, n_resamples, chunk_rows):
        picks = rng.integers(0, n, size=(min(chunk_rows, n_resamples - start), n))
        counts = {dtype: resample_counts(picks, n, dtype) for dtype in {d for _, d in operands.values()}}
        for name, (values, dtype) in operands.items():
            parts[name].append((values @ counts[dtype].T).astype(float))
    return {name: np.concatenate(chunks, axis=-1) for name, chunks in parts.items()}


def two_level_indices(n_runs, n_examples, n_resamples, rng=None, example_strata=None) -> TwoLevelIndices:
    """Run-resample and example-resample indices for a joint (two-level) bootstrap.

    The example resample of row b is shared by every run, as when all runs are scored on the
    same test set; `example_strata` (e.g. the language of each example) resamples examples
    within each stratum.
    """
    rng = _generator(rng)
    runs = paired_indices(n_runs, n_resamples, rng)
    examples = paired_indices(n_examples, n_resamples, rng, strata=example_strata)
    return TwoLevelIndices(runs=runs, examples=examples)


def resampled_sums(data, indices, *, max_elements=DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """Sums of `data` (..., n) over each resample of `indices` (n_resamples, n): shape (..., n_resamples).

    The fast path for statistics that depend on the data only through sums over observations
    (means, accuracy, ratios of sums such as micro F1): one matrix product with the resample
    counts instead of gathering every resampled value.
    """
    data = np.asarray(data, dtype=float)
    indices = np.asarray(indices)
    n = data.shape[-1]
    if indices.ndim != 2 or indices.shape[1] != n:
        raise ValueError(f"indices must have shape (n_resamples, {n}), got {indices.shape}")
    chunk = max(1, max_elements // max(n, data.size // n))
    dtype = _exact_product_dtype(data, n)
    operand = data.astype(dtype, copy=False)
    parts = [(operand @ resample_counts(indices[start:start + chunk], n, dtype).T).astype(float)
             for start in range(0, indices.shape[0], chunk)]
    return np.concatenate(parts, axis=-1)


def two_level_sums(per_example, indices: TwoLevelIndices, *, max_elements=DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """Per-run sums over resampled examples, with the runs resampled too.

    `per_example` has shape (..., n_runs, n_examples) (e.g. leading axes for tp/pred/gold or for
    languages); the result has shape (..., n_resamples, n_runs): entry [..., b, j] is the sum,
    over example resample b, of run `indices.runs[b, j]`. Ratios of sums (F1, accuracy) and means
    over runs are then cheap array operations on the result.
    """
    per_example = np.asarray(per_example, dtype=float)
    expected = (indices.runs.shape[1], indices.examples.shape[1])
    if per_example.ndim < 2 or per_example.shape[-2:] != expected:
        raise ValueError(f"per_example must end with (n_runs, n_examples) = {expected}, got {per_example.shape}")
    run_sums = np.swapaxes(resampled_sums(per_example, indices.examples, max_elements=max_elements), -1, -2)
    run_rows = np.broadcast_to(indices.runs, run_sums.shape)
    return np.take_along_axis(run_sums, run_rows, axis=-1)


def _as_samples(data):
    """A tuple of float arrays sharing the last axis; a tuple input means paired samples."""
    samples = tuple(np.asarray(sample, dtype=float) for sample in (data if isinstance(data, tuple) else (data,)))
    if not samples or any(sample.ndim == 0 for sample in samples):
        raise ValueError("data must be an array of shape (..., n) or a tuple of such arrays")
    n = samples[0].shape[-1]
    if any(sample.shape[-1] != n for sample in samples):
        raise ValueError("paired samples must have the same number of observations (last axis)")
    if n < 2:
        raise ValueError("the bootstrap needs at least 2 observations")
    return samples, n


def _statistic_on_rows(samples, statistic, row_maker, n_rows, row_length, max_elements):
    """statistic evaluated on samples[..., rows] for rows 0..n_rows-1, shape (..., n_rows).

    `row_maker(start, stop)` returns the index rows start..stop-1 (shape (stop-start, row_length)).
    """
    values_per_row = sum(sample.size // sample.shape[-1] for sample in samples) * row_length
    chunk = max(1, max_elements // max(values_per_row, 1))
    parts = []
    for start in range(0, n_rows, chunk):
        rows = row_maker(start, min(start + chunk, n_rows))
        value = np.asarray(statistic(*(sample[..., rows] for sample in samples), axis=-1), dtype=float)
        if value.ndim == 0 or value.shape[-1] != rows.shape[0]:
            raise ValueError(
                "statistic(resampled, axis=-1) must reduce the last axis and keep the resample "
                f"axis: got shape {value.shape} for {rows.shape[0]} resamples"
            )
        parts.append(value)
    return np.concatenate(parts, axis=-1)


def _leave_one_out_rows(n):
    """Row maker for the jackknife: row k holds 0..n-1 without k."""
    kept = np.arange(n - 1)

    def rows(start, stop):
        left_out = np.arange(start, stop)[:, None]
        return kept[None, :] + (kept[None, :] >= left_out)

    return rows


_STANDARD_NORMAL = NormalDist()
_normal_cdf = np.vectorize(_STANDARD_NORMAL.cdf, otypes=[float])


def _normal_quantile_scalar(probability):
    if np.isnan(probability):
        return np.nan
    if probability <= 0.0:
        return -np.inf
    if probability >= 1.0:
        return np.inf
    return _STANDARD_NORMAL.inv_cdf(probability)


_normal_quantile = np.vectorize(_normal_quantile_scalar, otypes=[float])


def _linear_quantile(sorted_distribution, probability):
    """Quantiles (numpy's default 'linear' method) with one probability per leading element."""
    n_resamples = sorted_distribution.shape[-1]
    probability = np.broadcast_to(probability, sorted_distribution.shape[:-1])
    position = np.nan_to_num(probability, nan=0.0) * (n_resamples - 1)
    lower = np.clip(np.floor(position).astype(np.int64), 0, n_resamples - 1)
    upper = np.minimum(lower + 1, n_resamples - 1)
    fraction = position - lower
    below = np.take_along_axis(sorted_distribution, lower[..., None], axis=-1)[..., 0]
    above = np.take_along_axis(sorted_distribution, upper[..., None], axis=-1)[..., 0]
    quantile = below + fraction * (above - below)
    return np.where(np.isnan(probability), np.nan, quantile)


def percentile_interval(distribution, confidence_level=0.95):
    """(low, high): the central percentile interval of a bootstrap distribution (last axis)."""
    alpha = (1.0 - confidence_level) / 2.0
    ordered = np.sort(np.asarray(distribution, dtype=float), axis=-1)
    return _linear_quantile(ordered, alpha), _linear_quantile(ordered, 1.0 - alpha)


def _bca_probabilities(samples, statistic, n, distribution, alpha, max_elements):
    """The BCa interval's quantile levels (alpha_1, alpha_2), as in scipy (Efron & Tibshirani 14.3)."""
    observed = np.asarray(statistic(*samples, axis=-1), dtype=float)[..., None]
    share_below = (np.count_nonzero(distribution < observed, axis=-1)
                   + np.count_nonzero(distribution <= observed, axis=-1)) / (2.0 * distribution.shape[-1])
    bias = _normal_quantile(share_below)
    jackknife = _statistic_on_rows(samples, statistic, _leave_one_out_rows(n), n, n - 1, max_elements)
    deviation = jackknife.mean(axis=-1, keepdims=True) - jackknife
    with np.errstate(divide="ignore", invalid="ignore"):
        acceleration = (deviation**3).sum(axis=-1) / (6.0 * (deviation**2).sum(axis=-1) ** 1.5)
    z_alpha = _STANDARD_NORMAL.inv_cdf(alpha)
    levels = []
    for z in (z_alpha, -z_alpha):
        shifted = bias + z
        with np.errstate(divide="ignore", invalid="ignore"):
            levels.append(_normal_cdf(bias + shifted / (1.0 - acceleration * shifted)))
    return levels


def _validated_options(method, confidence_level):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")


def _scalar_if_0d(values):
    values = np.asarray(values)
    return values[()] if values.ndim == 0 else values


def bootstrap_ci(data, statistic, *, n_resamples=10_000, confidence_level=0.95, method="percentile",
                 rng=None, indices=None, strata=None, keep_distribution=True,
                 max_elements=DEFAULT_MAX_ELEMENTS) -> BootstrapResult:
    """Two-sided bootstrap confidence interval of `statistic` along the last axis of `data`.

    data: an array of shape (..., n), or a tuple of arrays sharing the last axis n (paired
        samples, resampled with the same indices, like scipy's `paired=True`); every leading
        element gets its own interval, from the same resamples.
    statistic: vectorised, `statistic(*resampled, axis=-1)` maps arrays of shape (..., rows, n)
        to shape (..., rows).
    method: "percentile" or "bca" (bias-corrected and accelerated, jackknife acceleration).
    rng: a numpy Generator or seed; indices: precomputed (n_resamples, n) resample indices (from
        `paired_indices`, to share resamples across calls); strata: one label per observation,
        for stratified resampling when `indices` is not given.
    max_elements: how many resampled values to materialise at once (memory bound).
    """
    _validated_options(method, confidence_level)
    samples, n = _as_samples(data)
    if indices is None:
        indices = paired_indices(n, n_resamples, rng, strata=strata)
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != n:
        raise ValueError(f"indices must have shape (n_resamples, {n}), got {indices.shape}")
    distribution = _statistic_on_rows(samples, statistic, lambda a, b: indices[a:b],
                                      indices.shape[0], n, max_elements)
    alpha = (1.0 - confidence_level) / 2.0
    if method == "bca":
        levels = _bca_probabilities(samples, statistic, n, distribution, alpha, max_elements)
    else:
        levels = (alpha, 1.0 - alpha)
    ordered = np.sort(distribution, axis=-1)
    low, high = (_linear_quantile(ordered, level) for level in levels)
    if np.any(np.isnan(low)) or np.any(np.isnan(high)):
        warnings.warn("the bootstrap interval is undefined (degenerate distribution or statistic)",
                      RuntimeWarning, stacklevel=2)
    return BootstrapResult(
        low=_scalar_if_0d(low),
        high=_scalar_if_0d(high),
        standard_error=_scalar_if_0d(distribution.std(axis=-1, ddof=1)),
        distribution=distribution if keep_distribution else None,
    )
