"""lesion-metrics: GAN losses and evaluation metrics.

Evaluation metrics live one per file and register themselves by name (``fid``, ``kid``, ``is``,
``swd``, ``msssim``, ``pr``, ``domain_fd``); run them with :func:`calc_metric`.
"""

from lesion_metrics import domain_fd, fid, inception_score, kid, msssim, precision_recall, swd  # noqa: F401 (register)
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
