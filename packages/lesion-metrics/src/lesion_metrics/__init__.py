"""lesion-metrics: GAN losses and evaluation metrics.

Evaluation metrics live one per file and register themselves by name (``fid``, ``kid``, ``is``,
``swd``, ``msssim``, ``pr``, ``domain_fd``, ``memorization``, ``spectral``, ``per_class``); run them with
:func:`calc_metric`.
"""

from lesion_metrics import (  # noqa: F401 (register)
    domain_fd,
    fid,
    inception_score,
    kid,
    memorization,
    msssim,
    per_class,
    precision_recall,
    spectral,
    swd,
)
from lesion_metrics.registry import (
    FeatureExtractor,
    ImageSource,
    MetricOptions,
    MetricUnavailable,
    NotEnoughImages,
    calc_metric,
    is_valid_metric,
    list_metrics,
)

__all__ = ["FeatureExtractor", "ImageSource", "MetricOptions", "MetricUnavailable", "NotEnoughImages",
           "calc_metric", "is_valid_metric", "list_metrics"]
