"""Memorization: is a generated image a copy of a training image?

For every generated image, its nearest real (training) image in a feature space, the distance to it
(d1) and to the second-nearest (d2). A generated image counts as a copy when d1 is below the
``COPY_PERCENTILE``-th percentile of the real images' own nearest-neighbour distances (each real image
to its nearest *other* real image): closer to a training image than all but 1% of training images are
to each other. A fresh sample of the training distribution therefore scores ~0.01 by construction,
a generator that returns training images 1.

Two spaces: plain pixels at 64 px (area resize, intensities in [0, 1], distances as the RMS pixel
difference; always available) and the FID Inception pool3 features (shared with FID, KID, PR).
The REAL side is the reference set: pass the training images to ask about training copies.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lesion_metrics.bootstrap import percentile_interval, resample_rng
from lesion_metrics.inception import WeightsError
from lesion_metrics.registry import ImageSource, MetricOptions, register_metric, require_images

PIXEL_SIZE = 64
COPY_PERCENTILE = 1.0
# Below this many real images the 1st percentile of their nearest-neighbour distances is their minimum.
STABLE_REAL = 100
CLOSEST_PAIRS = 8
CHUNK = 512


def pixel_features(source: ImageSource, size: int = PIXEL_SIZE) -> torch.Tensor:
    """(N, 3 * size * size) float32 intensities in [0, 1], area-resized to ``size`` px."""
    parts = [F.interpolate(batch.float() / 255, size=(size, size), mode="area").flatten(1) for batch in source.iterate()]
    return torch.cat(parts)


def nearest_two(queries: torch.Tensor, support: torch.Tensor, exclude_self: bool = False,
                chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distance of every query to its nearest and second-nearest support point, and the nearest's
    index; ``exclude_self`` (queries are the support) skips each point itself."""
    d1, d2, index = [], [], []
    for lo in range(0, len(queries), chunk):
        dist = torch.cdist(queries[lo:lo + chunk], support)
        if exclude_self:
            rows = torch.arange(len(dist))
            dist[rows, rows + lo] = float("inf")
        values, nearest = dist.topk(2, dim=1, largest=False)
        d1.append(values[:, 0])
        d2.append(values[:, 1])
        index.append(nearest[:, 0])
    return torch.cat(d1), torch.cat(d2), torch.cat(index)


def memorization_figures(real, fake, scale: float = 1.0) -> dict:
    """Copy rate and nearest-neighbour figures of ``fake`` rows against ``real`` rows (distances
    multiplied by ``scale``), with the data for the intervals and the closest pairs."""
    real, fake = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)
    if len(real) < 3:
        raise ValueError(f"memorization needs at least 3 real images (a nearest and a second-nearest other), got {len(real)}")
    real_nn = nearest_two(real, real, exclude_self=True)[0].double().numpy() * scale
    d1, d2, index = nearest_two(fake, real)
    d1, d2 = d1.double().numpy() * scale, d2.double().numpy() * scale
    threshold = float(np.percentile(real_nn, COPY_PERCENTILE))
    ratio = d1 / np.maximum(d2, 1e-12)
    order = np.argsort(d1, kind="stable")[:CLOSEST_PAIRS]
    return {"copy_rate": float((d1 < threshold).mean()), "nn_ratio": float(np.median(ratio)),
            "nn_distance": float(np.median(d1) / np.median(real_nn)), "threshold": threshold,
            "real_nn": real_nn, "d1": d1, "ratio": ratio,
            "closest": [{"generated": int(i), "real": int(index[i]), "distance": float(d1[i]), "ratio": float(ratio[i])}
                        for i in order]}


def copy_rate_interval(figures: dict, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """Both sides resampled: the generated images (their d1) and the real nearest-neighbour
    distances that set the threshold; the real images themselves stay the reference set."""
    real_nn, d1 = figures["real_nn"], figures["d1"]
    thresholds = np.percentile(real_nn[rng.integers(0, len(real_nn), (resamples, len(real_nn)))], COPY_PERCENTILE, axis=1)
    rates = (d1[rng.integers(0, len(d1), (resamples, len(d1)))] < thresholds[:, None]).mean(axis=1)
    return percentile_interval(rates)


@register_metric("memorization")
def memorization(opts: MetricOptions) -> dict[str, float]:
    require_images("memorization", opts.real, 3, " (a nearest and a second-nearest other real image)")
    require_images("memorization", opts.fake, 1)
    spaces = {"pixels": (pixel_features(opts.real), pixel_features(opts.fake), 1 / np.sqrt(3 * PIXEL_SIZE**2))}
    try:
        spaces["inception"] = (opts.features("real")["pool3"], opts.features("fake")["pool3"], 1.0)
    except WeightsError as error:
        opts.note(f"memorization: pixels only, no Inception features ({error})")
    out, closest = {}, {}
    for space, (real, fake, scale) in spaces.items():
        figures = memorization_figures(real, fake, scale)
        for name in ("copy_rate", "nn_ratio", "nn_distance"):
            out[f"{name}_{space}"] = figures[name]
        out[f"copy_threshold_{space}"] = figures["threshold"]
        closest[space] = figures["closest"]
        if opts.real.num_images < STABLE_REAL:
            opts.flag(f"copy_rate_{space}", f"{opts.real.num_images} real images: the {COPY_PERCENTILE:g}st percentile "
                                            f"of their nearest-neighbour distances needs at least {STABLE_REAL}")
        if opts.bootstrap:
            rng = resample_rng(opts.seed, f"memorization_{space}")
            opts.interval(f"copy_rate_{space}", *copy_rate_interval(figures, opts.bootstrap, rng))
            draws = rng.integers(0, len(figures["ratio"]), (opts.bootstrap, len(figures["ratio"])))
            opts.interval(f"nn_ratio_{space}", *percentile_interval(np.median(figures["ratio"][draws], axis=1)))
    opts.artifacts["closest_pairs"] = closest
    return out
