"""Domain Frechet distance: the Frechet distance in the feature space of a lesion classifier trained on
real data. A secondary, domain-specific measure: it is reported as ``domain_fd`` and never called FID,
since its numbers are not comparable with FID from the Inception network."""

from __future__ import annotations

from lesion_metrics.fid import frechet_figure
from lesion_metrics.registry import MetricOptions, MetricUnavailable, register_metric, require_images


@register_metric("domain_fd")
def domain_fd(opts: MetricOptions) -> dict[str, float]:
    if opts.domain_extractor is None:
        raise MetricUnavailable("no lesion classifier given (evaluate --domain-classifier DIR)")
    for side in (opts.real, opts.fake):
        require_images("domain_fd", side, 2, " (a covariance needs two)")
    real = opts.features("real", opts.domain_extractor)["features"]
    fake = opts.features("fake", opts.domain_extractor)["features"]
    return {"domain_fd": frechet_figure(opts, "domain_fd", real, fake)}
