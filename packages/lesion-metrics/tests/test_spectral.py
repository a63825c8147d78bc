import numpy as np
import pytest
import torch
from lesion_metrics import ImageSource, MetricOptions, calc_metric
from lesion_metrics.spectral import checkerboard_mask


def blocks(n: int, size: int, seed: int) -> torch.Tensor:
    """Images constant on 4x4 blocks: exactly no power at the period-2 and period-4 frequencies."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(16, 240, (n, 3, size // 4, size // 4), generator=g)
    return low.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)


def checkerboard(size: int) -> torch.Tensor:
    i = torch.arange(size)
    return (-1) ** (i[:, None] + i[None, :])


def period4(size: int) -> torch.Tensor:
    return torch.tensor([1, 1, -1, -1]).repeat(size // 4)[None, :].expand(size, size)


def spectral(real: torch.Tensor, fake: torch.Tensor, **options) -> dict:
    def source(x, name):
        return ImageSource.from_array(x.to(torch.uint8), name, batch_size=5)
    return calc_metric("spectral", MetricOptions(source(real, "real"), source(fake, "fake"), progress=False, **options))


@pytest.mark.parametrize("pattern", [checkerboard, period4])
def test_an_overlay_of_amplitude_a_adds_a_squared(pattern):
    clean = blocks(12, 32, seed=0)
    a = 8
    record = spectral(blocks(12, 32, seed=1), clean + a * pattern(32))
    assert record["results"]["checkerboard_excess"] == pytest.approx(a**2, rel=1e-9)
    assert record["results"]["checkerboard_excess_db"] == float("inf")  # the real side has none


def test_relative_excess_is_the_amplitude_ratio_in_db():
    record = spectral(blocks(12, 32, seed=0) + 4 * checkerboard(32), blocks(12, 32, seed=1) + 8 * checkerboard(32),
                      bootstrap=30)
    results = record["results"]
    assert results["checkerboard_excess"] == pytest.approx(64 - 16, rel=1e-9)
    assert results["checkerboard_excess_db"] == pytest.approx(10 * np.log10(64 / 16), rel=1e-9)
    # every image carries the same pattern power: no spread to resample
    assert record["intervals"]["checkerboard_excess"] == pytest.approx([48, 48])


def test_clean_images_score_near_zero(smooth):
    record = spectral(smooth(40, 32, seed=0), smooth(40, 32, seed=1))
    results = record["results"]
    # under a grey level of amplitude (an overlay of 8 adds 64)
    assert abs(results["checkerboard_excess_db"]) < 1.5 and abs(results["checkerboard_excess"]) < 1
    assert results["spectrum_distance_db"] < 1.5
    curve = record["artifacts"]["spectrum"]
    assert len(curve["real"]) == len(curve["generated"]) == 16 and curve["frequency"][-1] == 0.5


def test_mask_holds_the_nyquist_and_half_nyquist_bins():
    mask = checkerboard_mask(8, 8)
    assert mask.sum() == 15 and not mask[0, 0] and mask[4, 4] and mask[0, 2] and mask[6, 0] and not mask[1, 0]
    with pytest.raises(ValueError, match="multiples of 4"):
        checkerboard_mask(10, 8)
