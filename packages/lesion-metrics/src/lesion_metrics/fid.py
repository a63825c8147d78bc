"""Frechet Inception Distance (Heusel et al. 2017) with the TF inception-2015-12-05 pool3 features."""

from __future__ import annotations

import numpy as np

from lesion_metrics.bootstrap import recentred_interval, resample_counts, resample_rng
from lesion_metrics.frechet import feature_statistics, frechet_distance, frechet_distance_weighted
from lesion_metrics.registry import MetricOptions, register_metric, require_images

FULL_RANK = 2049  # more images than the 2048 feature dimensions, for a full-rank covariance
UNBIASED_ENOUGH = 5000


def fid_from_features(real, fake) -> float:
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def frechet_figure(opts: MetricOptions, result: str, real: np.ndarray, fake: np.ndarray) -> float:
    """The Frechet distance of two feature sets, flagged when either side has no more images than
    feature dimensions (a rank-deficient covariance), with a bootstrap interval when asked for:
    ``opts.bootstrap`` resamples of both sides, each through :func:`frechet_distance_weighted`,
    re-centred on the value (:func:`recentred_interval`)."""
    count, dim = min(len(real), len(fake)), real.shape[1]
    if count <= dim:
        opts.flag(result, f"{count} images per side, not more than the {dim} feature dimensions: rank-deficient covariance")
    value = fid_from_features(real, fake)
    if opts.bootstrap:
        rng = resample_rng(opts.seed, result)
        draws = zip(resample_counts(len(real), opts.bootstrap, rng), resample_counts(len(fake), opts.bootstrap, rng))
        opts.interval(result, *recentred_interval([frechet_distance_weighted(real, a, fake, b) for a, b in draws], value))
    return value


def check_fid_counts(metric: str, opts: MetricOptions) -> None:
    for side in (opts.real, opts.fake):
        require_images(metric, side, 2, " (a covariance needs two)")
        if side.num_images < FULL_RANK:
            opts.note(f"{metric}: {side.num_images} {side.name} images give a rank-deficient covariance "
                      f"(needs more than 2048); FID is also biased upwards below ~{UNBIASED_ENOUGH}")
        elif side.num_images < UNBIASED_ENOUGH:
            opts.note(f"{metric}: FID is biased upwards below ~{UNBIASED_ENOUGH} images ({side.name}: {side.num_images})")


@register_metric("fid")
def fid(opts: MetricOptions) -> dict[str, float]:
    check_fid_counts("fid", opts)
    return {"fid": frechet_figure(opts, "fid", opts.features("real")["pool3"], opts.features("fake")["pool3"])}
