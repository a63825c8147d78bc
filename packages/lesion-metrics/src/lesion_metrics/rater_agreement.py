"""Statistics of a visual Turing test: raters label images as real or synthetic.

"Positive" means synthetic throughout: sensitivity is the fraction of synthetic images a rater
spotted, specificity the fraction of real images they accepted as real. Intervals are Wilson score
intervals (Wilson 1927), which keep their coverage for the small counts of a rater study where the
normal approximation does not; tests against chance are exact two-sided binomial tests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = [
    "Proportion",
    "binomial_test",
    "confidence_accuracy",
    "detection_summary",
    "fleiss_kappa",
    "proportion",
    "wilson_interval",
]


@dataclass(frozen=True)
class Proportion:
    """successes / n with a Wilson interval; estimate is NaN when n == 0."""

    successes: int
    n: int
    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (no continuity correction).

    With n == 0 there is no information and the interval is the whole of [0, 1].
    """
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0/n and n/n the bound is exactly 0 or 1; say so instead of leaving rounding dust.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def proportion(successes: int, n: int, confidence: float = 0.95) -> Proportion:
    low, high = wilson_interval(int(successes), int(n), confidence)
    estimate = successes / n if n else math.nan
    return Proportion(int(successes), int(n), estimate, low, high)


def binomial_test(successes: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value of `successes` out of `n` against rate `p`.

    Two-sided in the usual sense (scipy, R's binom.test): the total probability of all outcomes no
    more likely than the observed one. 1.0 when n == 0.
    """
    if n == 0:
        return 1.0
    return float(stats.binomtest(int(successes), int(n), p, alternative="two-sided").pvalue)


def detection_summary(is_synthetic, said_synthetic, confidence: float = 0.95) -> dict:
    """Accuracy, sensitivity and specificity for spotting synthetic images, with Wilson intervals
    and the exact binomial p-value of the accuracy against chance (0.5: the quiz is balanced)."""
    truth = np.asarray(is_synthetic, dtype=bool)
    said = np.asarray(said_synthetic, dtype=bool)
    if truth.shape != said.shape or truth.ndim != 1:
        raise ValueError(f"need two 1-D arrays of equal length, got {truth.shape} and {said.shape}")
    correct = int((truth == said).sum())
    return {
        "n": int(truth.size),
        "accuracy": proportion(correct, truth.size, confidence).to_dict(),
        "sensitivity": proportion(int((truth & said).sum()), int(truth.sum()), confidence).to_dict(),
        "specificity": proportion(int((~truth & ~said).sum()), int((~truth).sum()), confidence).to_dict(),
        "p_value_vs_chance": binomial_test(correct, truth.size, 0.5),
    }


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from an (N subjects, k categories) matrix of how many raters chose each category.

    Fleiss (1971) assumes the same number of raters per subject; rows with different totals use the
    common generalisation where each subject's agreement P_i uses its own n_i and the category
    shares p_j pool all ratings (identical to Fleiss when n_i is constant). Every row needs at
    least two ratings. NaN when chance agreement is 1 (all ratings in one category).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"need a non-empty (subjects, categories) matrix, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    n_i = counts.sum(axis=1)
    if (n_i < 2).any():
        raise ValueError("every subject needs at least two ratings for Fleiss' kappa")
    p_i = ((counts * counts).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_j = counts.sum(axis=0) / n_i.sum()
    p_bar, p_e = p_i.mean(), (p_j * p_j).sum()
    if math.isclose(p_e, 1.0):
        return math.nan
    return float((p_bar - p_e) / (1 - p_e))


def confidence_accuracy(confidence, correct, levels=(1, 2, 3, 4, 5), ci: float = 0.95) -> dict:
    """How accuracy depends on the stated confidence: accuracy with a Wilson interval per level, and
    Spearman's rank correlation between confidence and correctness (ties handled by mid-ranks)."""
    conf = np.asarray(confidence)
    ok = np.asarray(correct, dtype=bool)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError(f"need two 1-D arrays of equal length, got {conf.shape} and {ok.shape}")
    per_level = {
        int(level): proportion(int(ok[conf == level].sum()), int((conf == level).sum()), ci).to_dict()
        for level in levels
    }
    rho = p = math.nan
    # Spearman is undefined when either variable is constant.
    if conf.size >= 3 and np.unique(conf).size > 1 and np.unique(ok).size > 1:
        result = stats.spearmanr(conf, ok.astype(np.float64))
        rho, p = float(result.statistic), float(result.pvalue)
    return {"levels": per_level, "spearman_rho": rho, "spearman_p": p}
