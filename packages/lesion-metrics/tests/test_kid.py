import numpy as np
import pytest
import torch
from lesion_metrics.kid import kid_from_features, mmd2_unbiased, polynomial_kernel


def test_mmd_on_constructed_kernels():
    # Off-diagonal means: k_xx 2, k_yy 1, cross 0.5 -> MMD^2 = 2 + 1 - 2 * 0.5 = 2; diagonals are ignored.
    m = 4
    k_xx = np.full((m, m), 2.0)
    np.fill_diagonal(k_xx, 100.0)
    k_yy = np.ones((m, m))
    np.fill_diagonal(k_yy, -7.0)
    k_xy = np.full((m, m), 0.5)
    assert mmd2_unbiased(k_xx, k_yy, k_xy) == pytest.approx(2.0)


def test_polynomial_kernel_is_cubic_in_scaled_dot_product():
    x = np.array([[1.0, 2.0]])
    y = np.array([[3.0, -1.0]])
    assert polynomial_kernel(x, y)[0, 0] == pytest.approx(((1 * 3 - 2 * 1) / 2 + 1) ** 3)


def test_same_distribution_is_near_zero_and_shift_is_positive():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    same, _ = kid_from_features(a, b, num_subsets=20, subset_size=100, seed=1)
    shifted, _ = kid_from_features(a, b + 1.0, num_subsets=20, subset_size=100, seed=1)
    assert abs(same) < 0.02 < shifted


def test_parity_with_torch_fidelity():
    kid_features_to_metric = pytest.importorskip("torch_fidelity.metric_kid").kid_features_to_metric
    rng = np.random.default_rng(4)
    a = rng.standard_normal((150, 32)).astype(np.float32)
    b = (rng.standard_normal((120, 32)) * 1.2 + 0.3).astype(np.float32)
    ours, ours_std = kid_from_features(a, b, num_subsets=10, subset_size=50, seed=2020)
    theirs = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=10, kid_subset_size=50,
                                    kid_degree=3, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                    kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False)
    assert ours == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours_std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)
