import math

import numpy as np
import pytest
from lesion_metrics.auc import (
    auc_ci,
    balanced_accuracy,
    bootstrap_ci,
    delong,
    isic2017_scores,
    mean_ci,
    roc_auc,
)


def naive_delong(labels, scores):
    """O(mn) textbook DeLong (1988): structural components from the pairwise kernel."""
    labels = np.asarray(labels, bool)
    pos, neg = np.asarray(scores)[labels], np.asarray(scores)[~labels]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return psi.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


def test_auc_goldens_by_hand():
    # Pairs (pos, neg): (.35,.1) win, (.35,.4) loss, (.8,.1) win, (.8,.4) win -> 3/4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # Placements V10 = [.5, 1], V01 = [1, .5]: var 0.125 each, / 2 + / 2 -> 0.125.
    assert delong([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.75, 0.125)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all ties count one half
    assert roc_auc([1, 1, 0], [0.2, 0.3, 0.9]) == 0.0
    # One tie of four pairs: (1 + 1 + 1 + 0.5) / 4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == 0.875


def test_delong_matches_textbook_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes many ties
    auc, var = delong(labels, scores)
    ref_auc, ref_var = naive_delong(labels, scores)
    assert auc == pytest.approx(ref_auc, abs=1e-12) and var == pytest.approx(ref_var, rel=1e-10)
    _, lo, hi = auc_ci(labels, scores)
    assert hi - lo == pytest.approx(2 * 1.959964 * math.sqrt(var), rel=1e-5)


def test_bootstrap_agrees_with_delong_on_a_large_sample():
    rng = np.random.default_rng(1)
    labels = rng.random(2000) < 0.25
    scores = rng.normal(labels * 1.0, 1.0)
    auc, lo, hi = auc_ci(labels, scores)
    b_auc, b_lo, b_hi = bootstrap_ci(labels, scores, n_boot=1000, seed=3)
    assert b_auc == pytest.approx(auc)
    assert b_lo < auc < b_hi
    assert (b_hi - b_lo) == pytest.approx(hi - lo, rel=0.15)
    assert bootstrap_ci(labels, scores, n_boot=200, seed=3) == bootstrap_ci(labels, scores, n_boot=200, seed=3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="at least one positive"):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        roc_auc([0, 1, 1], [0.1, 0.2])


def test_balanced_accuracy_golden_and_undecided_rows():
    labels = [0, 0, 0, 0, 1, 2]
    probs = np.eye(3)[[0, 0, 0, 1, 1, 0]]
    assert balanced_accuracy(labels, probs) == pytest.approx((3 / 4 + 1 + 0) / 3)
    tied = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    assert balanced_accuracy([0, 2], tied) == 0.5  # the tied row is "undecided", hence wrong


def test_mean_ci_over_seeds():
    mean, lo, hi = mean_ci([0.8, 0.82, 0.84])
    assert mean == pytest.approx(0.82)
    assert hi - lo == pytest.approx(2 * 4.302653 * 0.02 / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert math.isnan(mean_ci([0.7])[1])


def random_predictions(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, n, p=[0.68, 0.19, 0.13])
    logits = rng.normal(np.eye(3)[labels] * 1.5, 1.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, np.round(probs, 2)  # rounding creates ties in AUC and in the arg-max


def test_parity_with_isic_challenge_scoring():
    metrics = pytest.importorskip("isic_challenge_scoring.metrics")  # test-only reference (root dev group)
    import pandas as pd
    labels, probs = random_predictions()
    names = ["nevus", "melanoma", "seborrheic_keratosis"]
    truth = pd.DataFrame(np.eye(3)[labels], columns=names)
    pred = pd.DataFrame(probs, columns=names)
    weights = pd.Series(np.ones(len(labels)))
    ours = isic2017_scores(labels, probs, n_boot=200)
    for name in ("melanoma", "seborrheic_keratosis"):
        reference = metrics.auc(truth[name], pred[name], weights)
        assert ours[f"auc_{name}"] == pytest.approx(reference, abs=1e-12)
    assert ours["auc_mean"] == pytest.approx((ours["auc_melanoma"] + ours["auc_seborrheic_keratosis"]) / 2)
    reference_bacc = metrics.balanced_multiclass_accuracy(truth, pred, weights)
    assert ours["balanced_accuracy"] == pytest.approx(reference_bacc, abs=1e-12)


def test_isic2017_intervals_contain_their_estimates():
    labels, probs = random_predictions(seed=2)
    scores = isic2017_scores(labels, probs, n_boot=300)
    for key in ("auc_melanoma", "auc_seborrheic_keratosis", "auc_mean"):
        lo, hi = scores[f"{key}_ci"]
        assert 0 <= lo < scores[key] < hi <= 1
    with pytest.raises(ValueError, match="probabilities"):
        isic2017_scores(labels, probs[:, :2])
