import pytest
import torch


@pytest.fixture(scope="session")
def inception_cache(tmp_path_factory):
    """A cache directory, shared by the whole test run, holding the fid-helper weights converted once to our layout."""
    from lesion_metrics.inception import load_inception

    cache = tmp_path_factory.mktemp("lesion-gan-cache")
    load_inception(cache_dir=cache)
    return cache


@pytest.fixture(scope="session")
def standard_weights_file(inception_cache, tmp_path_factory):
    """The same weights in the pytorch-fid / torch-fidelity file layout, with a seeded random 1008-class
    head (torch-fidelity loads strictly and needs one; its values only matter to the IS tests)."""
    from lesion_metrics.inception import load_weights

    state = dict(load_weights(cache_dir=inception_cache))
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.05
    state["fc.bias"] = torch.randn(1008, generator=g) * 0.05
    path = tmp_path_factory.mktemp("weights") / "pt_inception-2015-12-05-test.pth"
    torch.save(state, path)
    return path


def smooth_images(n: int, size: int, seed: int, low: int = 8) -> torch.Tensor:
    """uint8 NCHW images of smooth random colour fields: cheap stand-ins with photo-like spectra."""
    g = torch.Generator().manual_seed(seed)
    field = torch.rand(n, 3, low, low, generator=g)
    return (torch.nn.functional.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)
            .clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="session")
def smooth():
    return smooth_images


class ColourStatistics(torch.nn.Module):
    """A cheap stand-in for Inception's pool3: per-channel means and squared means of a 4x4 grid."""

    def forward(self, images):
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4)
        return {"pool3": torch.cat([x.flatten(1), x.square().flatten(1)], 1)}


@pytest.fixture
def cheap_inception(monkeypatch):
    """Metrics that read Inception features get :class:`ColourStatistics` instead (fast tests)."""
    from lesion_metrics import FeatureExtractor, MetricOptions

    monkeypatch.setattr(MetricOptions, "inception_extractor", lambda self: FeatureExtractor("colour-stats", ColourStatistics()))
