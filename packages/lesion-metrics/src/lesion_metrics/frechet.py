"""Frechet distance between Gaussians fitted to features (the core of FID and domain FD)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (N-1) covariance in float64, as the TF FID code computes them."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(S1 S2) = sum sqrt(eig(R S2 R)) with R = sqrt(S1): symmetric eigenproblems only, so no
    complex parts and no non-finite square roots, and ~10x faster than ``sqrtm`` at 2048 dimensions."""
    w, v = np.linalg.eigh(sigma1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ sigma2 @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """The reference (pytorch-fid / TF) route, with its known pitfalls handled: a non-finite
    ``sqrtm`` of a singular product is retried with ``eps`` on the diagonals, small imaginary parts
    from numerical error are dropped (a large one is an error), and ``disp`` (gone in SciPy >= 1.18)
    is not passed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # singular input warns; checked below
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "eigh") -> float:
    """``|mu1-mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2))`` in float64.

    ``method="eigh"`` (default) and ``"sqrtm"`` (the reference route) agree to ~1e-7 relative, also
    for the rank-deficient covariances of small sets (tested against pytorch-fid).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different shapes: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    else:
        raise ValueError(f"unknown method {method!r} (eigh or sqrtm)")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
