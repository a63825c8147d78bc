import numpy as np
import pytest
import torch
from lesion_metrics import ImageSource, MetricOptions, NotEnoughImages, calc_metric
from lesion_metrics.msssim import gaussian_window_1d, ms_ssim


def test_identical_images_score_one(smooth):
    x = smooth(3, 64, seed=0).float()
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_parity_with_pytorch_msssim_on_grey_images(smooth):
    # pytorch-msssim averages per channel after the product, the TF code over channels before it:
    # they agree when channels are equal, and pytorch-msssim needs more than 160 px.
    reference_ms_ssim = pytest.importorskip("pytorch_msssim").ms_ssim
    grey = smooth(4, 192, seed=1)[:, :1].expand(-1, 3, -1, -1).float()
    a, b = grey[0::2], grey[1::2]
    ours = ms_ssim(a, b)
    theirs = reference_ms_ssim(a, b, data_range=255, size_average=False)
    torch.testing.assert_close(ours.float(), theirs, atol=1e-4, rtol=1e-4)


def test_small_images_shrink_the_window(smooth):
    g = gaussian_window_1d(4, 4 * 1.5 / 11)
    assert g.shape == (4,) and g.sum().item() == pytest.approx(1.0)
    assert g[0] == pytest.approx(g[3].item()) and g[1] > g[0]  # centred between samples for even sizes
    x = smooth(1, 32, seed=5).float()
    noisy = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 20
    value = ms_ssim(x, noisy)
    assert 0 < value.item() < 1


def test_symmetric_and_differentiable():
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64) * 100 + 100).requires_grad_()
    b = a.detach() + torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64) * 20
    assert ms_ssim(a, b).item() == pytest.approx(ms_ssim(b, a).item())
    assert torch.autograd.gradcheck(lambda x: ms_ssim(x, b), (a,), eps=1e-4, atol=1e-5, fast_mode=True)


def test_metric_pairs_consecutive_images_across_batches(smooth):
    x = smooth(7, 32, seed=2)
    expected = ms_ssim(x[0:6:2].float(), x[1:6:2].float()).mean().item()
    opts = MetricOptions(ImageSource.from_array(x, "real", 3), ImageSource.from_array(x, "fake", 3), progress=False)
    result = calc_metric("msssim", opts)["results"]
    assert result["msssim"] == pytest.approx(expected) and result["msssim_real"] == pytest.approx(expected)
    one = ImageSource.from_array(x[:1], "fake")
    with pytest.raises(NotEnoughImages, match="at least 2 fake"):
        calc_metric("msssim", MetricOptions(one, one, progress=False))


def test_diverse_set_scores_lower_than_repeated_images(smooth):
    diverse = smooth(8, 32, seed=3)
    repeated = diverse[:1].repeat(8, 1, 1, 1)
    opts = MetricOptions(ImageSource.from_array(repeated, "real"), ImageSource.from_array(diverse, "fake"), progress=False)
    result = calc_metric("msssim", opts)["results"]
    assert result["msssim"] < 0.9 < result["msssim_real"] == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(result["msssim"])
