"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
``(x.y / d + 1)^3`` over 100 random subsets of 1000 images, seeded (the reference defaults)."""

from __future__ import annotations

import numpy as np

from lesion_metrics.bootstrap import percentile_interval, resample_counts, resample_rng
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


def _weighted_kernel_sums(x: np.ndarray, y: np.ndarray, wx: np.ndarray, wy: np.ndarray, chunk: int):
    """Per resample b: sum_ij wx[b,i] k(x_i, y_j) wy[b,j], and sum_i wx[b,i] wy[b,i] k(x_i, y_i) (x is y
    only for the within-set sums). Kernel rows are made one chunk at a time, never the full matrix."""
    total, diagonal = np.zeros(len(wx)), np.zeros(len(wx))
    for lo in range(0, len(x), chunk):
        k = polynomial_kernel(x[lo:lo + chunk], y)
        total += ((k @ wy.T) * wx[:, lo:lo + chunk].T).sum(axis=0)
        if x is y:
            diagonal += (wx[:, lo:lo + chunk] * wy[:, lo:lo + chunk]) @ np.diagonal(k[:, lo:lo + chunk])
    return total, diagonal


def mmd2_resampled(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray, fake_counts: np.ndarray,
                   chunk: int = 1024) -> np.ndarray:
    """Unbiased MMD^2 of whole resampled sets, one per row of the count matrices (B, N). The
    within-set means run over pairs of *different* images, each pair weighted by how often both were
    drawn: two draws of one image are not a pair, since k(x, x) terms would bias the resampled
    MMD^2 upwards (as a U-statistic's diagonal does). With every image drawn once this is
    :func:`mmd2_unbiased` of the whole sets."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    wr, wf = np.asarray(real_counts, np.float64), np.asarray(fake_counts, np.float64)
    m, n = len(real), len(fake)
    xx, dx = _weighted_kernel_sums(real, real, wr, wr, chunk)
    yy, dy = _weighted_kernel_sums(fake, fake, wf, wf, chunk)
    xy, _ = _weighted_kernel_sums(real, fake, wr, wf, chunk)
    pairs_x, pairs_y = m * m - (wr * wr).sum(axis=1), n * n - (wf * wf).sum(axis=1)
    return (xx - dx) / pairs_x + (yy - dy) / pairs_y - 2 * xy / (m * n)


def kid_figure(opts: MetricOptions, result: str, real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """KID mean and std of two feature sets; smaller sets shrink the subsets (as StyleGAN3's KID,
    rather than fail) and the figure is flagged; with a bootstrap interval when asked for."""
    size = min(SUBSET_SIZE, len(real), len(fake))
    if size < SUBSET_SIZE:
        opts.flag(result, f"subsets of {size} images, fewer than the {SUBSET_SIZE} KID is defined with")
    if opts.bootstrap:
        # The subset mean and the whole-set unbiased MMD^2 estimate the same quantity; the interval
        # is that of the whole-set estimate (one pass of kernel rows for every resample at once).
        rng = resample_rng(opts.seed, result)
        counts = resample_counts(len(real), opts.bootstrap, rng), resample_counts(len(fake), opts.bootstrap, rng)
        opts.interval(result, *percentile_interval(mmd2_resampled(real, fake, *counts)))
    return kid_from_features(real, fake, subset_size=size, seed=opts.seed)


@register_metric("kid")
def kid(opts: MetricOptions) -> dict[str, float]:
    for side in (opts.real, opts.fake):
        require_images("kid", side, 2, " (an unbiased MMD needs two per subset)")
    mean, std = kid_figure(opts, "kid", opts.features("real")["pool3"], opts.features("fake")["pool3"])
    return {"kid": mean, "kid_std": std}
