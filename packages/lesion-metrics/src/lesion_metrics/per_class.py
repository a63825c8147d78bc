"""Per-diagnosis figures: FID, KID, precision and recall of each class's generated images against
the real images of that class, and the class balance of both sets.

Needs class labels on both sides: the real store's labels (-1, unknown, is left out) and the classes
a conditional generator was asked for. Results are named ``<figure>[<class>]``; every figure carries
the flags and intervals of its whole-set version, judged on the class's own image counts (a class of
374 melanomas gives a rank-deficient FID covariance and shrunken KID subsets).
"""

from __future__ import annotations

from lesion_metrics.fid import frechet_figure
from lesion_metrics.kid import kid_figure
from lesion_metrics.precision_recall import K, precision_recall
from lesion_metrics.registry import MetricOptions, MetricUnavailable, register_metric


@register_metric("per_class")
def per_class(opts: MetricOptions) -> dict[str, float]:
    real_labels, fake_labels = opts.real.labels, opts.fake.labels
    if real_labels is None or not (real_labels >= 0).any():
        raise MetricUnavailable("the real images have no class labels")
    if fake_labels is None or not (fake_labels >= 0).any():  # a folder's images come unlabelled (-1)
        raise MetricUnavailable("the generated images have no classes (only a conditional generator's have)")
    count = int(max(real_labels.max(), fake_labels.max())) + 1
    names = list(opts.real.class_names or opts.fake.class_names)
    names += [str(k) for k in range(len(names), count)]
    real, fake = opts.features("real")["pool3"], opts.features("fake")["pool3"]
    known = real_labels >= 0
    out = {}
    for k, name in enumerate(names):
        r, f = real[real_labels == k], fake[fake_labels == k]
        out[f"fraction_real[{name}]"] = float((real_labels[known] == k).mean())
        out[f"fraction_generated[{name}]"] = float((fake_labels[fake_labels >= 0] == k).mean())
        if min(len(r), len(f)) < K + 1:
            opts.note(f"per_class: {name}: {len(r)} real and {len(f)} generated images, too few for its figures "
                      f"(needs {K + 1} per side)")
            continue
        out[f"fid[{name}]"] = frechet_figure(opts, f"fid[{name}]", r, f)
        out[f"kid[{name}]"] = kid_figure(opts, f"kid[{name}]", r, f)[0]
        out[f"precision[{name}]"], out[f"recall[{name}]"] = precision_recall(r, f, K, opts.device)
    return out
