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


def frechet_distance_weighted(x1, w1, x2, w2) -> float:
    """Frechet distance of the Gaussians fitted to rows ``x1`` drawn ``w1`` times each (and ``x2``,
    ``w2``): a bootstrap resample without copying rows; equal to ``frechet_distance`` of the
    statistics of the repeated rows.

    With S = A^T A (A: the centred rows scaled by sqrt(w / (N-1))), tr sqrt(S1 S2) is the sum of the
    singular values of A1 A2^T. When a side has fewer distinct rows than dimensions (a resample of
    1,000 images keeps ~632 of them) that is an eigenproblem of that size instead of two of 2048.
    """
    parts = []
    for x, w in ((x1, w1), (x2, w2)):
        w = np.asarray(w, np.float64)
        keep = w > 0
        x, w = np.asarray(x, np.float64)[keep], w[keep]
        n = w.sum()
        if n < 2:
            raise ValueError(f"need at least 2 drawn feature vectors, got {n:g}")
        mu = w @ x / n
        parts.append((mu, (x - mu) * np.sqrt(w / (n - 1))[:, None]))
    (mu1, a1), (mu2, a2) = parts
    if min(len(a1), len(a2)) < a1.shape[1]:
        c = a1 @ a2.T
        gram = c @ c.T if len(a1) <= len(a2) else c.T @ c
        tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)).sum())
    else:
        tr_covmean = _trace_sqrt_product_eigh(a1.T @ a1, a2.T @ a2)
    diff = mu1 - mu2
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2 * tr_covmean)
