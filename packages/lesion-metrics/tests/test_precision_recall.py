import numpy as np
import pytest
import torch
from lesion_metrics.precision_recall import coverage, knn_radii, precision_recall


def test_identical_sets_have_full_precision_and_recall():
    x = np.random.default_rng(0).standard_normal((50, 8))
    assert precision_recall(x, x) == (1.0, 1.0)


def test_far_apart_sets_have_none():
    x = np.random.default_rng(1).standard_normal((40, 8))
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_mode_dropping_lowers_recall_not_precision():
    rng = np.random.default_rng(2)
    real = np.concatenate([rng.standard_normal((100, 2)), rng.standard_normal((100, 2)) + 20])
    fake = rng.standard_normal((100, 2))  # only the first mode
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9 and recall < 0.6


def test_radii_and_chunking_match_brute_force():
    x = torch.randn(37, 5, generator=torch.Generator().manual_seed(3))
    d = torch.cdist(x, x)
    expected = d.sort(dim=1).values[:, 3]  # k = 3, the point itself is at index 0
    torch.testing.assert_close(knn_radii(x, chunk=7), expected)
    y = torch.randn(23, 5, generator=torch.Generator().manual_seed(4))
    inside = (torch.cdist(y, x) <= expected[None]).any(dim=1).float().mean().item()
    assert coverage(y, x, expected, chunk=5) == pytest.approx(inside)
