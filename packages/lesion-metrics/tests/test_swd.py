"""SWD against a plain NumPy transcription of PGGAN's official code (benchmarks/metrics_speed.py)."""

import importlib.util
import pathlib

import numpy as np
import pytest
import torch
from lesion_metrics import ImageSource, MetricOptions, NotEnoughImages, calc_metric
from lesion_metrics import swd as S

BENCH = pathlib.Path(__file__).resolve().parents[3] / "benchmarks" / "metrics_speed.py"


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("metrics_speed_reference", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_laplacian_pyramid_matches_official(ref, smooth):
    images = smooth(4, 64, seed=0)
    ours = S.laplacian_pyramid(images, 3)
    theirs = ref.ref_laplacian_pyramid(images.numpy(), 3)
    assert [tuple(level.shape) for level in ours] == [(4, 3, 64, 64), (4, 3, 32, 32), (4, 3, 16, 16)]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-3)


def test_same_descriptors_and_directions_give_official_swd(ref, smooth):
    real, fake = smooth(6, 32, seed=1), smooth(6, 32, seed=2, low=4)
    g = torch.Generator().manual_seed(0)
    ours, theirs = [], []
    for images in (real, fake):
        level = S.laplacian_pyramid(images, 2)[0]
        pos = S.sample_positions(len(level), 32, 32, g)
        ours.append(S.finalize_descriptors(S.get_descriptors(level, pos)))
        theirs.append(ref.ref_finalize(ref.ref_descriptors(level.numpy().copy(), positions=pos.numpy())))
    np.testing.assert_allclose(ours[0].numpy(), theirs[0], rtol=1e-4, atol=1e-4)
    dirs = S.random_directions(ours[0].shape[1], g)
    value = S.sliced_wasserstein(ours[0], ours[1], dirs)
    expected = ref.ref_sliced_wasserstein(theirs[0], theirs[1], dirs=dirs.numpy())
    assert value > 0
    assert value == pytest.approx(float(expected), rel=1e-4)


def test_identical_sets_zero_and_order_irrelevant():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(500, 147, generator=g), torch.randn(500, 147, generator=g) + 0.1
    dirs = S.random_directions(147, g)
    assert S.sliced_wasserstein(a, a, dirs) == 0.0
    perm = torch.randperm(500, generator=g)
    assert S.sliced_wasserstein(a[perm], b, dirs) == pytest.approx(S.sliced_wasserstein(a, b, dirs), rel=1e-6)


def test_metric_levels_baseline_and_separation(smooth):
    real = smooth(8, 32, seed=4)
    opts = MetricOptions(ImageSource.from_array(real, "real", 5), ImageSource.from_array(real, "fake", 5), progress=False)
    same = calc_metric("swd", opts)["results"]
    assert set(same) == {"swd_32", "swd_16", "swd_avg", "swd_real_baseline_32", "swd_real_baseline_16", "swd_real_baseline_avg"}
    noise = torch.randint(0, 256, (8, 3, 32, 32), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    opts = MetricOptions(ImageSource.from_array(real, "real", 5), ImageSource.from_array(noise, "fake", 5), progress=False)
    different = calc_metric("swd", opts)["results"]
    assert different["swd_avg"] > 2 * same["swd_avg"]
    assert different["swd_real_baseline_avg"] == pytest.approx(same["swd_real_baseline_avg"])


def test_flat_generated_images_give_a_finite_large_distance(smooth):
    real = smooth(8, 32, seed=4)
    flat = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    opts = MetricOptions(ImageSource.from_array(real, "real", 5), ImageSource.from_array(flat, "fake", 5), progress=False)
    results = calc_metric("swd", opts)["results"]
    assert all(np.isfinite(v) for v in results.values()), results
    assert results["swd_avg"] > 2 * results["swd_real_baseline_avg"]


def test_too_small_images_are_a_clear_error(smooth):
    src = ImageSource.from_array(smooth(2, 8, seed=0), "real")
    with pytest.raises(NotEnoughImages, match="at least 16 px"):
        calc_metric("swd", MetricOptions(src, src, progress=False))


def test_folded_normalisation_equals_official_on_raw_descriptors(ref):
    # Raw descriptors far from zero mean (like the coarsest level): normalising via the directions
    # must give the official value on the normalised copies.
    g = torch.Generator().manual_seed(6)
    n = 4000
    raw_a = torch.randn(n, 3, 7, 7, generator=g) * torch.tensor([40.0, 30, 20]).view(1, 3, 1, 1) + 128
    raw_b = raw_a + torch.randn(n, 3, 7, 7, generator=g) * 5 + 3
    dirs = S.random_directions(147, g)
    value = S.sliced_wasserstein(S.Descriptors.of(raw_a), S.Descriptors.of(raw_b), dirs)
    expected = ref.ref_sliced_wasserstein(ref.ref_finalize(raw_a.numpy().copy()), ref.ref_finalize(raw_b.numpy().copy()),
                                          dirs=dirs.numpy())
    assert value == pytest.approx(float(expected), rel=1e-4)


def test_chunked_collection_gives_official_descriptors_and_moments(ref, smooth):
    # 45 images in batches of 20: chunks of 32 within batches, a partial last batch, two draws.
    images = smooth(45, 32, seed=7)
    (first, second), res = S.collect_descriptors(ImageSource.from_array(images, "real", 20), 45,
                                                 torch.Generator().manual_seed(8), "cpu", draws=2)
    assert res == [32, 16]
    g = torch.Generator().manual_seed(8)
    expected = [[[], []], [[], []]]
    for start in range(0, 45, 20):
        batch = images[start:start + 20]
        pyramid = ref.ref_laplacian_pyramid(batch.numpy(), 2)
        for draw in range(2):
            for lod, size in enumerate(res):
                pos = S.sample_positions(len(batch), size, size, g)
                expected[draw][lod].append(ref.ref_descriptors(pyramid[lod], positions=pos.numpy()))
    for ours, theirs in zip((first, second), expected):
        for level, desc in zip(ours, theirs):
            desc = np.concatenate(desc)
            np.testing.assert_allclose(level.raw.numpy(), desc.reshape(len(desc), -1), atol=1e-3)
            np.testing.assert_allclose(level.mean.numpy(), desc.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(level.std.numpy(), desc.std(axis=(0, 2, 3)), rtol=1e-5)


def test_resampled_descriptors_take_whole_image_blocks():
    # Row r of image i holds the value i everywhere: a resample must keep 128-row blocks intact.
    raw = torch.arange(3).repeat_interleave(S.NHOODS_PER_IMAGE).float()[:, None, None, None].expand(-1, 3, 7, 7)
    drawn = S.resampled_descriptors(S.Descriptors.of(raw.contiguous()), torch.tensor([2, 0, 2]))
    expected = torch.tensor([2.0, 0.0, 2.0]).repeat_interleave(S.NHOODS_PER_IMAGE)
    assert torch.equal(drawn.raw[:, 0], expected) and drawn.mean[0].item() == pytest.approx(4 / 3)


def test_interval_holds_the_value_and_separates_sets(smooth):
    real, same = smooth(24, 32, seed=4), smooth(24, 32, seed=6)
    noisy = (same.int() + torch.randint(-100, 101, same.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 255)

    def swd(fake, seed=0):
        opts = MetricOptions(ImageSource.from_array(real, "real", 8), ImageSource.from_array(fake.to(torch.uint8), "fake", 8),
                             bootstrap=8, seed=seed, progress=False)
        record = calc_metric("swd", opts)
        return record["results"]["swd_avg"], record["intervals"]["swd_avg"]

    value, (lo, hi) = swd(same)
    assert lo < value < hi
    far, (far_lo, far_hi) = swd(noisy)
    assert hi < far_lo < far < far_hi
    assert swd(same) == (value, [lo, hi])  # seeded


def test_interval_spread_comes_from_resampling_images():
    # Both sides hold the same descriptors, so any set of directions gives SWD 0: all the spread of
    # the interval comes from drawing different images on the two sides.
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(12, 1, 3, 7, 7, generator=g).expand(-1, S.NHOODS_PER_IMAGE, -1, -1, -1).reshape(-1, 3, 7, 7)
    desc = [S.Descriptors.of(raw.contiguous())]
    assert S.sliced_wasserstein(desc[0], desc[0], S.random_directions(147, g, repeats=1)) == 0
    lo, hi = S.swd_interval(desc, desc, 12, 0.0, 10, torch.Generator().manual_seed(1))
    assert hi - lo > 1.0
