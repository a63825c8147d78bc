import numpy as np
import pytest
import torch
from lesion_metrics import FeatureExtractor, ImageSource, MetricOptions, calc_metric
from lesion_metrics.frechet import feature_statistics, frechet_distance
from lesion_metrics.registry import extract_features


def random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_equal_covariances_give_squared_mean_distance():
    rng = np.random.default_rng(0)
    sigma = random_cov(rng, 16)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6)


def test_identical_sets_give_zero():
    feats = np.random.default_rng(1).standard_normal((200, 8))
    stats = feature_statistics(feats)
    assert abs(frechet_distance(*stats, *stats)) < 1e-8


def test_one_dimensional_closed_form():
    # FD of N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_statistics_are_float64_with_n_minus_1_covariance():
    feats = np.random.default_rng(2).standard_normal((10, 3)).astype(np.float32)
    mu, sigma = feature_statistics(feats)
    assert mu.dtype == sigma.dtype == np.float64
    centred = feats.astype(np.float64) - mu
    np.testing.assert_allclose(sigma, centred.T @ centred / 9, rtol=1e-12)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
@pytest.mark.parametrize("n", [500, 20])  # full rank, and rank-deficient (n < d) as in small FID runs
def test_parity_with_pytorch_fid(n, method):
    calculate_frechet_distance = pytest.importorskip("pytorch_fid.fid_score").calculate_frechet_distance
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((n, 64)), rng.standard_normal((n, 64)) * 1.3 + 0.2
    ours = frechet_distance(*feature_statistics(a), *feature_statistics(b), method=method)
    theirs = calculate_frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert ours == pytest.approx(theirs, rel=1e-6)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_singular_product_stays_finite(method):
    sigma = np.zeros((4, 4))
    sigma[0, 0] = 1.0
    value = frechet_distance(np.zeros(4), sigma, np.ones(4), sigma, method=method)
    assert np.isfinite(value) and value == pytest.approx(4.0, abs=1e-3)


def test_mismatched_shapes_and_methods_are_rejected():
    with pytest.raises(ValueError, match="different shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="unknown method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


class MeanColour(torch.nn.Module):
    """A stand-in domain feature extractor: per-channel means and squared means."""

    def forward(self, images):
        x = images.float() / 255
        return {"features": torch.cat([x.mean(dim=(2, 3)), x.square().mean(dim=(2, 3))], 1)}


def test_domain_fd_uses_the_given_extractor_and_is_never_called_fid():
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 128, (20, 3, 8, 8), generator=g, dtype=torch.uint8)
    src_real, src_fake = ImageSource.from_array(real, "real"), ImageSource.from_array(fake, "fake")
    absent = calc_metric("domain_fd", MetricOptions(src_real, src_fake, progress=False))
    assert absent["results"] == {} and "classifier" in absent["unavailable"]
    extractor = FeatureExtractor("mean-colour", MeanColour())
    result = calc_metric("domain_fd", MetricOptions(src_real, src_fake, domain_extractor=extractor, progress=False))
    f_real, f_fake = MeanColour()(real)["features"].numpy(), MeanColour()(fake)["features"].numpy()
    expected = frechet_distance(*feature_statistics(f_real), *feature_statistics(f_fake))
    assert list(result["results"]) == ["domain_fd"]
    assert result["results"]["domain_fd"] == pytest.approx(expected, rel=1e-5) and expected > 0


class ShapeRecorder(MeanColour):
    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def forward(self, images):
        self.batch_sizes.append(len(images))
        return super().forward(images)


def test_feature_extraction_pads_the_last_chunk_and_drops_its_features():
    """A compiled network must see one batch shape: 21 images in source batches of 6 reach it as
    chunks of 6 (the last padded), and the features are those of the 21 images alone."""
    images = torch.randint(0, 256, (21, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    network = ShapeRecorder()
    features = extract_features(ImageSource.from_array(images, "real", batch_size=6), network, "cpu", progress=False)
    assert set(network.batch_sizes) == {6} and len(network.batch_sizes) == 4
    np.testing.assert_allclose(features["features"], MeanColour()(images)["features"].numpy(), rtol=1e-6)
