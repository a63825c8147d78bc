"""Improved precision and recall (Kynkaanniemi et al. 2019), k = 3, in Inception pool3 space.

Deviation: the paper uses VGG-16 fc2 features; VGG weights cannot be fetched offline, so the FID
Inception features are used (as torch-fidelity's default). Distances are computed in row chunks so
10k x 10k sets never need the full distance matrix.
"""

from __future__ import annotations

import numpy as np
import torch

from lesion_metrics.registry import MetricOptions, register_metric, require_images

K = 3
CHUNK = 1024


def knn_radii(features: torch.Tensor, k: int = K, chunk: int = CHUNK) -> torch.Tensor:
    """Distance of every point to its k-th nearest other point (the point itself is the 0th)."""
    return torch.cat([torch.cdist(features[i:i + chunk], features).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(features), chunk)])


def coverage(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = CHUNK) -> float:
    """Fraction of queries inside at least one support ball."""
    inside = [(torch.cdist(queries[i:i + chunk], support) <= radii[None]).any(dim=1)
              for i in range(0, len(queries), chunk)]
    return torch.cat(inside).float().mean().item()


def precision_recall(real, fake, k: int = K, device: str = "cpu") -> tuple[float, float]:
    real = torch.as_tensor(np.asarray(real), dtype=torch.float32, device=device)
    fake = torch.as_tensor(np.asarray(fake), dtype=torch.float32, device=device)
    precision = coverage(fake, real, knn_radii(real, k))
    recall = coverage(real, fake, knn_radii(fake, k))
    return precision, recall


@register_metric("pr")
def improved_precision_recall(opts: MetricOptions) -> dict[str, float]:
    for side in (opts.real, opts.fake):
        require_images("pr", side, K + 1, f" (k={K} neighbours besides itself)")
    precision, recall = precision_recall(opts.features("real")["pool3"], opts.features("fake")["pool3"], K, opts.device)
    return {"precision": precision, "recall": recall}
