import numpy as np
import pytest
import torch
from lesion_metrics import ImageSource, MetricOptions, calc_metric


def tinted(n: int, level: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 60 + level).to(torch.uint8)


def test_each_class_is_compared_with_its_own_real_images(cheap_inception):
    # Class 0 is dark, class 1 bright. A generator that draws each class right scores low per class;
    # one that swaps the classes scores high per class while its whole set is the same mixture.
    real = torch.cat([tinted(40, 20, 0), tinted(40, 170, 1)])
    real_labels = np.repeat([0, 1, -1], [40, 30, 10])  # unknown labels are left out
    right = torch.cat([tinted(30, 20, 2), tinted(30, 170, 3)])
    labels = np.repeat([0, 1], 30)
    source = ImageSource.from_array(real, "real", labels=real_labels, class_names=("nevus", "melanoma"))
    good = calc_metric("per_class", MetricOptions(source, ImageSource.from_array(right, "generated", labels=labels),
                                                  bootstrap=20, progress=False))
    swapped = calc_metric("per_class", MetricOptions(source, ImageSource.from_array(right, "generated", labels=1 - labels),
                                                     progress=False))
    for name in ("nevus", "melanoma"):
        assert good["results"][f"fid[{name}]"] < 0.1 * swapped["results"][f"fid[{name}]"]
        assert good["results"][f"precision[{name}]"] > 0.5 > swapped["results"][f"precision[{name}]"]
        assert "rank-deficient" in good["flags"][f"fid[{name}]"] and f"kid[{name}]" in good["intervals"]
    assert good["results"]["fraction_real[nevus]"] == pytest.approx(40 / 70)
    assert good["results"]["fraction_generated[melanoma]"] == pytest.approx(0.5)


def test_unlabelled_sides_are_reported_not_computed(cheap_inception):
    images = tinted(10, 20, 0)
    unlabelled = ImageSource.from_array(images, "generated")
    labelled = ImageSource.from_array(images, "real", labels=np.zeros(10))
    assert "no class labels" in calc_metric("per_class", MetricOptions(unlabelled, unlabelled))["unavailable"]
    assert "conditional" in calc_metric("per_class", MetricOptions(labelled, unlabelled))["unavailable"]
    unknown = ImageSource.from_array(images, "generated", labels=np.full(10, -1))
    assert "conditional" in calc_metric("per_class", MetricOptions(labelled, unknown))["unavailable"]
