"""Golden numbers for the visual-Turing-test statistics, from published tables and by hand."""

import math

import numpy as np
import pytest
from lesion_metrics.rater_agreement import (
    binomial_test,
    confidence_accuracy,
    detection_summary,
    fleiss_kappa,
    proportion,
    wilson_interval,
)


@pytest.mark.parametrize(
    "successes, n, low, high",
    [  # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe_table(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_by_hand_and_edges():
    # 8/10 at z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10), half-width from the formula.
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.8 * 0.2 / 10 + z * z / 400)
    assert wilson_interval(8, 10) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert math.isnan(proportion(0, 0).estimate)
    # A wider confidence gives a wider interval.
    assert wilson_interval(8, 10, 0.99)[0] < wilson_interval(8, 10, 0.95)[0]
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_binomial_test_exact_values():
    assert binomial_test(9, 10) == pytest.approx(22 / 1024, abs=1e-15)  # 2 * (1 + 10) / 2^10
    assert binomial_test(5, 10) == pytest.approx(1.0)
    assert binomial_test(6, 8) == pytest.approx(74 / 256, abs=1e-15)  # 2 * (1 + 8 + 28) / 2^8
    # R documentation, binom.test(c(682, 243), p = 3/4): p-value = 0.3825 (asymmetric null).
    assert binomial_test(682, 925, 0.75) == pytest.approx(0.3825, abs=5e-5)
    assert binomial_test(0, 0) == 1.0


def test_fleiss_kappa_wikipedia_example():
    # Fleiss' kappa, Wikipedia worked example: 10 subjects, 14 raters, 5 categories -> 0.210.
    counts = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    # P_bar = 0.378, P_e = 0.2134 by hand: kappa = (0.37802 - 0.21337) / (1 - 0.21337).
    assert fleiss_kappa(counts) == pytest.approx(0.20993, abs=5e-6)


def test_fleiss_kappa_fleiss_1971_psychiatric_diagnoses():
    # Fleiss (1971): 30 patients, 6 psychiatrists each, 5 diagnoses; R irr::kappam.fleiss(diagnoses)
    # gives 0.4302445 (the data ship with R's irr package as `diagnoses`).
    ratings = np.array([
        [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
        [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
        [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
        [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
        [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
        [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
    ])
    counts = np.stack([(ratings == c).sum(axis=1) for c in range(1, 6)], axis=1)
    assert counts.sum(axis=0).tolist() == [26, 26, 30, 55, 43]
    assert fleiss_kappa(counts) == pytest.approx(0.4302445, abs=5e-8)


def test_fleiss_kappa_edges_and_variable_raters():
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    # Two raters always disagreeing on a balanced binary task: P_bar = 0, P_e = 0.5 -> -1.
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    assert math.isnan(fleiss_kappa([[2, 0], [3, 0]]))
    # Rows with 2 and 3 raters: P_i = (4-2)/2 = 1 and (5-3)/6 = 1/3; p = (4/5, 1/5), P_e = 0.68.
    assert fleiss_kappa([[2, 0], [2, 1]]) == pytest.approx((2 / 3 - 0.68) / 0.32)
    with pytest.raises(ValueError, match="two ratings"):
        fleiss_kappa([[1, 0], [2, 0]])


def test_detection_summary_by_hand():
    truth = [1, 1, 1, 0, 0, 0, 0, 1]
    said = [1, 0, 1, 0, 1, 0, 0, 1]
    got = detection_summary(truth, said)
    assert got["n"] == 8
    assert (got["accuracy"]["successes"], got["accuracy"]["n"]) == (6, 8)
    assert (got["sensitivity"]["successes"], got["sensitivity"]["n"]) == (3, 4)
    assert (got["specificity"]["successes"], got["specificity"]["n"]) == (3, 4)
    assert got["accuracy"]["low"] == pytest.approx(wilson_interval(6, 8)[0])
    assert got["p_value_vs_chance"] == pytest.approx(74 / 256)
    with pytest.raises(ValueError, match="equal length"):
        detection_summary([1, 0], [1])


def test_confidence_accuracy_by_hand():
    got = confidence_accuracy([1, 2, 3, 4, 4], [0, 0, 1, 1, 0])
    assert got["levels"][4]["successes"] == 1 and got["levels"][4]["n"] == 2
    assert got["levels"][5]["n"] == 0
    # Spearman of [1,2,3,4] with [0,0,1,1]: ranks (1..4) vs (1.5,1.5,3.5,3.5) -> 4 / (2 sqrt 5).
    assert confidence_accuracy([1, 2, 3, 4], [0, 0, 1, 1])["spearman_rho"] == pytest.approx(2 / math.sqrt(5))
    assert math.isnan(confidence_accuracy([3, 3, 3], [0, 1, 1])["spearman_rho"])
    assert np.isfinite(got["spearman_p"])
