"""Bootstrap 95% intervals: both sides resampled with replacement, percentile intervals, seeded.

A resample is drawn as a count per item (how often the item was drawn), so metrics evaluate it by
weighting the items they already hold (cached features, per-image scores) instead of copying them.
The draws depend only on the seed, the metric's name and the set sizes: deterministic.
"""

from __future__ import annotations

import zlib

import numpy as np

LEVEL = 0.95


def resample_rng(seed: int, name: str) -> np.random.Generator:
    """One stream per (seed, metric): adding a metric never changes another one's draws."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) int counts; each row sums to n (n draws with replacement)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)


def percentile_interval(values) -> tuple[float, float]:
    """The central 95% of the resampled values (the percentile bootstrap)."""
    lo, hi = np.percentile(np.asarray(values, np.float64), [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(lo), float(hi)


def mean_interval(values, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """Interval of the mean of per-item values (per pair, per image)."""
    values = np.asarray(values, np.float64)
    return percentile_interval(resample_counts(len(values), resamples, rng) @ values / len(values))


def recentred_interval(values, value: float) -> tuple[float, float]:
    """The percentile interval moved so that the resamples' median falls on ``value``. For a biased
    statistic whose resamples are biased further (the Frechet distance: duplicated images act like a
    smaller set, which raises it by about its own small-sample bias), the plain percentile interval
    lies above the value; this one keeps the resamples' spread and shows the sampling variation of
    the statistic at this set size."""
    lo, hi = percentile_interval(values)
    median = float(np.median(values))
    return value + lo - median, value + hi - median
