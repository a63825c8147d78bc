import numpy as np
import pytest
import torch
from lesion_metrics import ImageSource, MetricOptions, calc_metric
from lesion_metrics.memorization import memorization_figures, nearest_two, pixel_features


def test_nearest_two_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    support, queries = torch.randn(30, 5, generator=g), torch.randn(11, 5, generator=g)
    d1, d2, index = nearest_two(queries, support, chunk=4)
    full = torch.cdist(queries, support).sort(dim=1)
    assert torch.allclose(d1, full.values[:, 0], atol=1e-5) and torch.allclose(d2, full.values[:, 1], atol=1e-5)
    assert torch.equal(index, full.indices[:, 0])
    own = nearest_two(support, support, exclude_self=True, chunk=7)[0]
    brute = torch.cdist(support, support) + torch.diag(torch.full((30,), float("inf")))
    assert torch.allclose(own, brute.min(dim=1).values, atol=1e-5)


def test_copies_score_one_and_a_fresh_sample_near_zero(smooth, cheap_inception):
    training = smooth(300, 32, seed=0)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(1))[:60]
    copier = ImageSource.from_array(training[order], "generated")
    fresh = ImageSource.from_array(smooth(60, 32, seed=1), "generated")
    real = ImageSource.from_array(training, "real")

    copied = calc_metric("memorization", MetricOptions(real, copier, bootstrap=50, progress=False))
    for space in ("pixels", "inception"):
        assert copied["results"][f"copy_rate_{space}"] == 1.0
        assert copied["results"][f"nn_ratio_{space}"] < 0.01
        pairs = copied["artifacts"]["closest_pairs"][space]
        assert all(order[p["generated"]] == p["real"] for p in pairs)
    assert copied["intervals"]["copy_rate_pixels"] == [1.0, 1.0] and copied["flags"] == {}

    new = calc_metric("memorization", MetricOptions(real, fresh, progress=False))["results"]
    for space in ("pixels", "inception"):
        assert new[f"copy_rate_{space}"] <= 0.05  # ~0.01 by construction of the threshold
        assert 0.5 < new[f"nn_distance_{space}"] < 2 and new[f"nn_ratio_{space}"] > 0.5


def test_threshold_is_the_first_percentile_of_real_neighbour_distances():
    # Real points on a line at 0, 1, 3, 6, ...: nearest-other distances are known in closed form.
    real = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    fake = torch.tensor([[0.5], [2.9], [20.0]])
    figures = memorization_figures(real, fake)
    assert figures["threshold"] == pytest.approx(np.percentile([1, 1, 2, 3, 4], 1))
    assert figures["copy_rate"] == pytest.approx(2 / 3)  # 0.5 and 0.1 are below ~1.0; 10 is not
    assert figures["ratio"] == pytest.approx([0.5 / 0.5, 0.1 / 1.9, 10 / 14], rel=1e-5)  # float32 distances


def test_pixels_are_area_resized_to_64():
    images = torch.zeros(2, 3, 128, 128, dtype=torch.uint8)
    images[:, :, :, 64:] = 255
    features = pixel_features(ImageSource.from_array(images, "x"))
    assert features.shape == (2, 3 * 64 * 64) and features.mean().item() == pytest.approx(0.5)


def test_gather_reads_images_across_batches_in_the_asked_order():
    images = torch.arange(7, dtype=torch.uint8)[:, None, None, None].expand(7, 3, 2, 2).contiguous()
    picked = ImageSource.from_array(images, "x", batch_size=3).gather([5, 0, 5, 3])
    assert picked[:, 0, 0, 0].tolist() == [5, 0, 5, 3]
