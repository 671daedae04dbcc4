"""Bootstrap over runs: resample the runs of every IsoFLOP budget with replacement, refit, and take
percentile intervals of every reported quantity.

Resampling within budgets keeps each budget's run count (and so the IsoFLOP design) fixed; a
replicate in which a quantity cannot be computed (e.g. a budget left with fewer than three distinct
sizes) yields NaN for it, and intervals are percentiles of the finite replicates, reported with the
fraction of replicates that were finite. When fewer than MIN_VALID of the replicates could compute
a quantity, the survivors are a biased few (e.g. the resamples that kept three distinct sizes) and
no interval is given: low and high are NaN and `valid` says why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95
MIN_VALID = 0.5  # an interval needs at least this fraction of replicates with a value


def resample_within_groups(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, total) row indices: each group's rows drawn with replacement, group sizes kept."""
    if not groups:
        return np.zeros((n_boot, 0), dtype=int)
    parts = [g[rng.integers(0, len(g), size=(n_boot, len(g)))] for g in groups]
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    valid: float  # fraction of replicates in which the quantity was finite

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))


def percentile_interval(
    samples: np.ndarray, level: float = DEFAULT_LEVEL, min_valid: float = MIN_VALID
) -> Interval:
    """Equal-tailed percentile interval of the finite samples; NaN ends when fewer than
    `min_valid` of the samples are finite."""
    samples = np.asarray(samples, dtype=float)
    finite = samples[np.isfinite(samples)]
    valid = len(finite) / len(samples) if len(samples) else 0.0
    if len(finite) == 0 or valid < min_valid:
        return Interval(float("nan"), float("nan"), valid)
    tail = 50 * (1 - level)
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(low), float(high), valid)


def percentile_band(
    samples: np.ndarray, level: float = DEFAULT_LEVEL, min_valid: float = MIN_VALID
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise interval of curves: samples (n_boot, n_points) -> (low, high) per point; NaN at
    points where fewer than `min_valid` of the curves are finite."""
    tail = 50 * (1 - level)
    samples = np.asarray(samples, dtype=float)
    if samples.size == 0 or not np.isfinite(samples).any():
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points stay NaN
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    thin = np.isfinite(samples).mean(axis=0) < min_valid
    return np.where(thin, np.nan, low), np.where(thin, np.nan, high)
