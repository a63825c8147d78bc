import numpy as np
import pytest
from lesion_metrics import ImageSource, MetricOptions, calc_metric
from lesion_metrics.bootstrap import mean_interval, resample_counts, resample_rng
from lesion_metrics.fid import frechet_figure
from lesion_metrics.frechet import feature_statistics, frechet_distance, frechet_distance_weighted
from lesion_metrics.kid import mmd2_resampled, mmd2_unbiased, polynomial_kernel


@pytest.mark.parametrize("dims", [80, 8])  # fewer distinct rows than dimensions (Gram route) and more
def test_weighted_frechet_equals_the_repeated_rows(dims):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((60, dims)), rng.standard_normal((50, dims)) * 1.3 + 0.2
    wa, wb = resample_counts(60, 1, rng)[0], resample_counts(50, 1, rng)[0]
    repeated = frechet_distance(*feature_statistics(np.repeat(a, wa, 0)), *feature_statistics(np.repeat(b, wb, 0)))
    assert frechet_distance_weighted(a, wa, b, wb) == pytest.approx(repeated, rel=1e-7)  # eigh of rank-deficient S: ~1e-8


def test_resampled_mmd_pairs_only_different_images():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((40, 6)), rng.standard_normal((30, 6)) + 0.3
    wa, wb = resample_counts(40, 3, rng), resample_counts(30, 3, rng)
    values = mmd2_resampled(a, b, wa, wb, chunk=7)
    for i in range(3):
        # The repeated rows, with every pair of draws of one image (not only a draw with itself) left out.
        x, y = np.repeat(a, wa[i], 0), np.repeat(b, wb[i], 0)
        same_x, same_y = np.repeat(np.arange(40), wa[i]), np.repeat(np.arange(30), wb[i])
        kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
        different_x, different_y = same_x[:, None] != same_x[None], same_y[:, None] != same_y[None]
        expected = (kxx[different_x].mean() + kyy[different_y].mean() - 2 * polynomial_kernel(x, y).mean())
        assert values[i] == pytest.approx(expected, rel=1e-9)
    ones = mmd2_resampled(a[:30], b, np.ones((1, 30)), np.ones((1, 30)))[0]
    assert ones == pytest.approx(mmd2_unbiased(polynomial_kernel(a[:30], a[:30]), polynomial_kernel(b, b),
                                               polynomial_kernel(a[:30], b)), rel=1e-9)


def test_interval_of_a_mean_has_the_normal_width():
    values = np.random.default_rng(2).standard_normal(400)
    lo, hi = mean_interval(values, 2000, resample_rng(0, "test"))
    # 2 * 1.96 * sd / sqrt(n), sd ~ 1
    assert hi - lo == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.1)
    assert lo < values.mean() < hi


def test_frechet_interval_resamples_both_sides():
    # 1-D, N(0,1) against N(1,1): FD ~ (m1 - m2)^2 with sd 2 |m1 - m2| sqrt(2/n); resampling one side
    # only would give sqrt(2) less.
    rng = np.random.default_rng(3)
    n = 2000
    real, fake = rng.standard_normal((n, 1)), rng.standard_normal((n, 1)) + 1
    opts = MetricOptions(None, None, bootstrap=400, seed=5)
    value = frechet_figure(opts, "fid", real, fake)
    lo, hi = opts.intervals["fid"]
    assert lo < value < hi
    assert hi - lo == pytest.approx(2 * 1.96 * 2 * np.sqrt(2 / n), rel=0.15)
    assert opts.flags == {}
    again = MetricOptions(None, None, bootstrap=400, seed=5)
    frechet_figure(again, "fid", real, fake)
    assert again.intervals == opts.intervals  # seeded: deterministic


def test_frechet_interval_holds_the_value_of_a_small_set():
    # 300 images in 64 dimensions: resampled sets (duplicates) raise FD by about its own bias, so
    # the plain percentile interval would lie wholly above the value.
    rng = np.random.default_rng(4)
    scales = 1 / np.sqrt(np.arange(1, 65))
    real, fake = rng.standard_normal((300, 64)) * scales, rng.standard_normal((300, 64)) * scales * 1.1 + 0.05
    opts = MetricOptions(None, None, bootstrap=100, seed=0)
    value = frechet_figure(opts, "fid", real, fake)
    lo, hi = opts.intervals["fid"]
    assert lo < value < hi and hi - lo < value


def test_records_carry_flags_and_intervals(smooth, cheap_inception):
    real, fake = ImageSource.from_array(smooth(30, 16, seed=0), "real"), ImageSource.from_array(smooth(30, 16, seed=1), "fake")
    record = calc_metric("fid", MetricOptions(real, fake, bootstrap=20, progress=False))
    assert "rank-deficient" in record["flags"]["fid"]  # 30 images, 96 feature dimensions
    lo, hi = record["intervals"]["fid"]
    assert lo <= hi and record["bootstrap"] == 20
    record = calc_metric("kid", MetricOptions(real, fake, bootstrap=20, progress=False))
    assert "fewer than the 1000" in record["flags"]["kid"] and set(record["intervals"]) == {"kid"}
    record = calc_metric("msssim", MetricOptions(real, fake, bootstrap=20, progress=False))
    assert set(record["intervals"]) == {"msssim", "msssim_real"} and record["flags"] == {}
    record = calc_metric("msssim", MetricOptions(real, fake, progress=False))
    assert record["intervals"] == {} and "bootstrap" not in record
