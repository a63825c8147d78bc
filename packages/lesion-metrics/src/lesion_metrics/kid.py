"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
``(x.y / d + 1)^3`` over 100 random subsets of 1000 images, seeded (the reference defaults)."""

from __future__ import annotations

import numpy as np

from lesion_metrics.registry import MetricOptions, register_metric, require_images

NUM_SUBSETS = 100
SUBSET_SIZE = 1000


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples from their kernel matrices (diagonals excluded)."""
    m = k_xx.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid_from_features(real: np.ndarray, fake: np.ndarray, num_subsets: int = NUM_SUBSETS,
                      subset_size: int = SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of MMD^2 over subsets drawn as torch-fidelity draws them."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    rng = np.random.RandomState(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        x = real[rng.choice(len(real), subset_size, replace=False)]
        y = fake[rng.choice(len(fake), subset_size, replace=False)]
        mmds[i] = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    return float(mmds.mean()), float(mmds.std())


@register_metric("kid")
def kid(opts: MetricOptions) -> dict[str, float]:
    for side in (opts.real, opts.fake):
        require_images("kid", side, 2, " (an unbiased MMD needs two per subset)")
    # Like StyleGAN3's KID, smaller sets shrink the subsets rather than fail.
    size = min(SUBSET_SIZE, opts.real.num_images, opts.fake.num_images)
    if size < SUBSET_SIZE:
        opts.note(f"kid: subsets of {size} images instead of {SUBSET_SIZE} (needs {SUBSET_SIZE} per side)")
    mean, std = kid_from_features(opts.features("real")["pool3"], opts.features("fake")["pool3"],
                                  subset_size=size, seed=opts.seed)
    return {"kid": mean, "kid_std": std}
