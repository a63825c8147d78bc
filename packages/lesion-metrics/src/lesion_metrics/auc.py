"""ROC AUC with its uncertainty, balanced accuracy and the ISIC-2017 classification protocol.

- ``roc_auc``: the Mann-Whitney statistic; ties between a positive and a negative count 1/2
  (identical to the trapezoidal area under the empirical ROC curve, as scikit-learn computes it).
- ``delong``: AUC and its variance by DeLong, DeLong & Clarke-Pearson (1988), computed with the
  midrank algorithm of Sun & Xu (2014) in O(n log n). ``auc_ci`` gives the 95% interval
  AUC +- 1.96 sd clipped to [0, 1], as pROC's ``ci.auc(method="delong")`` does.
- ``bootstrap_ci``: stratified percentile bootstrap of any score (positives and negatives are
  resampled separately so every replicate keeps both classes), fully vectorised.
- ``balanced_accuracy``: mean per-class recall of the arg-max prediction; a row whose maximum is
  shared by several classes counts as wrong ("undecided"), like the ISIC challenge scorer.
- ``isic2017_scores``: ISIC-2017 Part 3 — melanoma-vs-rest AUC, seborrheic-keratosis-vs-rest AUC
  and their mean (the challenge's ranking score), each with a 95% CI, plus balanced accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

MELANOMA, SEBORRHEIC_KERATOSIS = 1, 2  # ISIC-2017 class indices (nevus is 0)


def _binary(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"AUC: {labels.size} labels but {scores.size} scores")
    if not np.isfinite(scores).all():
        raise ValueError("AUC: scores contain NaN or infinity")
    if labels.all() or not labels.any():
        raise ValueError("AUC: needs at least one positive and one negative example")
    return labels, scores


def roc_auc(labels, scores) -> float:
    """P(score of a random positive > that of a random negative) + 1/2 P(tie)."""
    labels, scores = _binary(labels, scores)
    ranks = stats.rankdata(scores)  # midranks handle ties
    m, n = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - m * (m + 1) / 2) / (m * n))


def delong(labels, scores) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC)."""
    labels, scores = _binary(labels, scores)
    pos, neg = scores[labels], scores[~labels]
    m, n = pos.size, neg.size
    all_ranks = stats.rankdata(np.concatenate([pos, neg]))
    # Placement values (Sun & Xu): V10[i] = fraction of negatives below positive i (ties 1/2),
    # V01[j] = fraction of positives above negative j.
    v10 = (all_ranks[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - stats.rankdata(neg)) / m
    auc = float(v10.mean())
    s10 = v10.var(ddof=1) if m > 1 else 0.0
    s01 = v01.var(ddof=1) if n > 1 else 0.0
    return auc, float(s10 / m + s01 / n)


def auc_ci(labels, scores, level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, lower, upper): DeLong normal interval, clipped to [0, 1]."""
    auc, var = delong(labels, scores)
    half = stats.norm.ppf(0.5 + level / 2) * math.sqrt(var)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def _batched_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each row of ``scores`` (B, n) against each row of boolean ``labels`` (B, n)."""
    ranks = stats.rankdata(scores, axis=1)
    m = labels.sum(axis=1)
    n = labels.shape[1] - m
    return (np.where(labels, ranks, 0).sum(axis=1) - m * (m + 1) / 2) / (m * n)


def bootstrap_ci(
    labels,
    scores,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    strata=None,
) -> tuple[float, float, float]:
    """(statistic, lower, upper) by the percentile bootstrap, resampling within each stratum.

    ``statistic(labels_b, scores_b)`` receives (B, n, ...) stacks of resampled rows and returns
    (B,) values; the default is the binary AUC. ``strata`` defaults to ``labels`` (so each
    replicate keeps the class counts); pass class indices for multi-class statistics.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if statistic is None:
        labels, scores = _binary(labels, scores)
        statistic = _batched_auc
    strata = labels if strata is None else np.asarray(strata)
    if strata.ndim != 1:
        raise ValueError("bootstrap_ci: strata must be one value per example")
    rng = np.random.default_rng(seed)
    columns = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        columns.append(members[rng.integers(0, members.size, (n_boot, members.size))])
    index = np.concatenate(columns, axis=1)  # (n_boot, n): one resampled data set per row
    point = float(statistic(labels[None], scores[None])[0])
    values = statistic(labels[index], scores[index])
    alpha = (1 - level) / 2
    lower, upper = np.quantile(values, [alpha, 1 - alpha])
    return point, float(lower), float(upper)


def argmax_or_undecided(probabilities) -> np.ndarray:
    """Predicted class per row; -1 where the maximum is shared by several classes."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    top = probabilities.max(axis=-1, keepdims=True)
    decided = (probabilities == top).sum(axis=-1) == 1
    return np.where(decided, probabilities.argmax(axis=-1), -1)


def balanced_accuracy(labels, probabilities) -> float:
    """Mean recall over the classes present in ``labels`` (ISIC's "balanced multiclass accuracy")."""
    labels = np.asarray(labels).ravel()
    predicted = argmax_or_undecided(probabilities)
    if predicted.shape != labels.shape:
        raise ValueError(f"balanced_accuracy: {labels.size} labels but {predicted.size} predictions")
    recalls = [np.mean(predicted[labels == k] == k) for k in np.unique(labels)]
    return float(np.mean(recalls))


def _isic_mean_auc(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Batched mean of melanoma-vs-rest and SK-vs-rest AUC: labels (B, n), probabilities (B, n, K)."""
    mel = _batched_auc(labels == MELANOMA, probabilities[..., MELANOMA])
    sk = _batched_auc(labels == SEBORRHEIC_KERATOSIS, probabilities[..., SEBORRHEIC_KERATOSIS])
    return (mel + sk) / 2


def isic2017_scores(labels, probabilities, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """ISIC-2017 Part 3 scores of class probabilities (n, 3) for labels in {0, 1, 2}.

    Per-task AUC intervals are DeLong's; the mean's interval is a stratified bootstrap (the two
    AUCs share examples, so their errors are correlated and cannot simply be added).
    """
    labels = np.asarray(labels).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.size or probabilities.shape[1] < 3:
        raise ValueError(f"isic2017_scores: want (n, >=3) probabilities for {labels.size} labels, "
                         f"got {probabilities.shape}")
    result = {"n": int(labels.size)}
    for name, k in (("melanoma", MELANOMA), ("seborrheic_keratosis", SEBORRHEIC_KERATOSIS)):
        auc, lo, hi = auc_ci(labels == k, probabilities[:, k], level)
        result[f"auc_{name}"], result[f"auc_{name}_ci"] = auc, [lo, hi]
    mean, lo, hi = bootstrap_ci(labels, probabilities, _isic_mean_auc, n_boot, level, seed, strata=labels)
    result["auc_mean"], result["auc_mean_ci"] = mean, [lo, hi]
    result["balanced_accuracy"] = balanced_accuracy(labels, probabilities)
    return result


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): Student-t interval of a mean over a few runs (e.g. seeds).

    With one value the interval is undefined and returned as (mean, nan, nan)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return mean, float(mean - half), float(mean + half)


__all__ = [
    "roc_auc", "delong", "auc_ci", "bootstrap_ci", "balanced_accuracy", "argmax_or_undecided",
    "isic2017_scores", "mean_ci", "MELANOMA", "SEBORRHEIC_KERATOSIS",
]
