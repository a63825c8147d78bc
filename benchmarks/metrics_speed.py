"""Speed of our metrics against reference implementations; prints ratios.

- SWD: ours (vectorised torch) vs PGGAN's official algorithm, transcribed plainly in NumPy/SciPy
  below (the reference the parity tests also use), on N images of R px (default 2048 x 128 px).
- Inception features: ours vs torch-fidelity's extractor (same weights): img/s, FLOPs, achieved
  GFLOP/s, matmul GFLOP/s of the same process, MFU, peak MB (benchmarks/_perf.py); with
  --inception-compile also ours through torch.compile (as ``evaluate --compile``).
- MS-SSIM: ours vs pytorch-msssim on 192 px pairs.

    uv run python benchmarks/metrics_speed.py [--n 2048] [--res 128] [--skip-reference]
        [--only swd,inception,msssim] [--swd-iters 3] [--inception-n 64] [--inception-batch 16]
        [--inception-compile]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import numpy as np
import scipy.ndimage
import torch

# ---------------------------------------------------------------------------------------------
# PGGAN's metrics/sliced_wasserstein.py, transcribed plainly (NumPy + SciPy, as the official).
# Only change: ``positions``/``dirs`` may be passed in so tests can feed both sides the same draws.

GAUSSIAN_5X5 = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0


def ref_pyr_down(mb):
    return scipy.ndimage.convolve(mb, GAUSSIAN_5X5[np.newaxis, np.newaxis], mode="mirror")[:, :, ::2, ::2]


def ref_pyr_up(mb):
    s = mb.shape
    res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), mb.dtype)
    res[:, :, ::2, ::2] = mb
    return scipy.ndimage.convolve(res, GAUSSIAN_5X5[np.newaxis, np.newaxis] * 4.0, mode="mirror")


def ref_laplacian_pyramid(mb, num_levels):
    pyramid = [np.float32(mb)]
    for _ in range(1, num_levels):
        pyramid.append(ref_pyr_down(pyramid[-1]))
        pyramid[-2] -= ref_pyr_up(pyramid[-1])
    return pyramid


def ref_descriptors(mb, nhood_size=7, nhoods_per_image=128, positions=None):
    s = mb.shape
    n = nhoods_per_image * s[0]
    h = nhood_size // 2
    nhood, chan, x, y = np.ogrid[0:n, 0:3, -h:h + 1, -h:h + 1]
    img = nhood // nhoods_per_image
    if positions is None:
        x = x + np.random.randint(h, s[3] - h, size=(n, 1, 1, 1))
        y = y + np.random.randint(h, s[2] - h, size=(n, 1, 1, 1))
    else:  # positions are (row, column) centres
        x = x + positions[:, 1].reshape(n, 1, 1, 1)
        y = y + positions[:, 0].reshape(n, 1, 1, 1)
    idx = ((img * s[1] + chan) * s[2] + y) * s[3] + x
    return mb.flat[idx]


def ref_finalize(desc):
    desc = np.concatenate(desc, axis=0) if isinstance(desc, list) else desc
    desc -= np.mean(desc, axis=(0, 2, 3), keepdims=True)
    desc /= np.std(desc, axis=(0, 2, 3), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def ref_sliced_wasserstein(a, b, dir_repeats=4, dirs_per_repeat=128, dirs=None):
    results = []
    for repeat in range(dir_repeats):
        if dirs is None:
            d = np.random.randn(a.shape[1], dirs_per_repeat)
            d /= np.sqrt(np.sum(np.square(d), axis=0, keepdims=True))
            d = d.astype(np.float32)
        else:
            d = dirs[repeat]
        proj_a = np.sort(np.matmul(a, d), axis=0)
        proj_b = np.sort(np.matmul(b, d), axis=0)
        results.append(np.mean(np.abs(proj_a - proj_b)))
    return np.mean(results)


def ref_swd(reals, fakes, minibatch=64):
    """The official API flow: feed minibatches of uint8 NCHW, end() -> per-level SWD x1e3 and average."""
    resolutions = []
    res = reals.shape[2]
    while res >= 16:
        resolutions.append(res)
        res //= 2

    def describe(images):
        desc = [[] for _ in resolutions]
        for start in range(0, len(images), minibatch):
            for lod, level in enumerate(ref_laplacian_pyramid(images[start:start + minibatch], len(resolutions))):
                desc[lod].append(ref_descriptors(level))
        return [ref_finalize(d) for d in desc]

    real, fake = describe(reals), describe(fakes)
    dist = [ref_sliced_wasserstein(a, b) * 1e3 for a, b in zip(real, fake)]
    return dist + [np.mean(dist)]


# ---------------------------------------------------------------------------------------------


def _perf():
    # Imported here, not at the top: the SWD tests import this file for the reference code alone.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import _perf

    return _perf


def _images(n, res, seed):
    from lesion_metrics.swd import laplacian_pyramid  # noqa: F401  (import cost outside timings)

    g = torch.Generator().manual_seed(seed)
    # Smooth random blobs: closer to photographs than white noise.
    low = torch.rand(n, 3, res // 8, res // 8, generator=g)
    return (torch.nn.functional.interpolate(low, size=(res, res), mode="bilinear") * 255).to(torch.uint8)


def bench_swd(n, res, skip_reference, iters):
    from lesion_metrics import ImageSource, MetricOptions, calc_metric
    from lesion_metrics.swd import collect_descriptors, random_directions, sliced_wasserstein

    perf = _perf()
    reals, fakes = _images(n, res, 1), _images(n, res, 2)
    real_src, fake_src = ImageSource.from_array(reals, "real", 256), ImageSource.from_array(fakes, "fake", 256)
    dists = []

    def ours():
        # The same work as the official code (no real-vs-real baseline): the speed-up compares this.
        g = torch.Generator().manual_seed(0)
        (real,), _ = collect_descriptors(real_src, n, g, "cpu")
        (fake,), _ = collect_descriptors(fake_src, n, g, "cpu")
        dists[:] = [sliced_wasserstein(a, b, random_directions(a.raw.shape[1], g)) * 1e3 for a, b in zip(real, fake)]

    t_ours = perf.median_seconds(ours, warmup=0, iters=iters)
    print(f"SWD ours      {n} x {res}px: {t_ours:8.2f} s (median of {iters})  avg {np.mean(dists):.4f}", flush=True)
    full = {}

    def metric():
        full.update(calc_metric("swd", MetricOptions(real_src, fake_src, progress=False))["results"])

    t_metric = perf.median_seconds(metric, warmup=0, iters=1)
    print(f"SWD metric with its real-vs-real baseline: {t_metric:8.2f} s  avg {full['swd_avg']:.4f}  "
          f"(baseline {full['swd_real_baseline_avg']:.4f})", flush=True)
    if skip_reference:
        return
    ref = []

    def official():
        np.random.seed(0)
        ref[:] = ref_swd(reals.numpy(), fakes.numpy())

    t_ref = perf.median_seconds(official, warmup=0, iters=1)
    print(f"SWD official  {n} x {res}px: {t_ref:8.2f} s  avg {ref[-1]:.4f}")
    print(f"SWD speed-up: {t_ref / t_ours:.1f}x", flush=True)


def bench_inception(n, batch, iters, compile):
    from lesion_metrics.inception import load_inception, load_weights
    from lesion_metrics.registry import compile_network
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    perf = _perf()
    images = _images(n, 256, 3)
    ours = load_inception()
    state = dict(load_weights())
    state.update({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    with tempfile.NamedTemporaryFile(suffix=".pth") as f:
        torch.save(state, f.name)
        theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=f.name)
    matmul = perf.matmul_gflops()
    rows = {}
    print(f"Inception features of {n} images of 256 px in batches of {batch} (resized to 299 inside)")
    print(perf.HEADER)
    cases = [("ours", lambda x: ours(x)["pool3"]), ("torch-fidelity", lambda x: theirs(x)[0])]
    if compile:  # evaluate --compile; the warm-up run compiles
        cases.append(("ours compiled", lambda x: compile_network(ours)(x)["pool3"]))
    with torch.inference_mode():
        for name, fn in cases:
            def run(fn=fn):
                for i in range(0, n, batch):
                    fn(images[i:i + batch])

            rows[name] = perf.measure(f"inception {name}", run, n, iters=iters, matmul=matmul)
            print(perf.row(rows[name]), flush=True)
    print(f"Inception FLOPs per image: {rows['ours'].flops / n / 1e9:.2f} GFLOP")
    print(f"Inception speed ratio (ours / torch-fidelity): {rows['ours'].img_per_s / rows['torch-fidelity'].img_per_s:.2f}")
    if compile:
        print(f"Inception speed ratio (ours compiled / ours): {rows['ours compiled'].img_per_s / rows['ours'].img_per_s:.2f}")


def bench_msssim(n, iters):
    import pytorch_msssim
    from lesion_metrics.msssim import ms_ssim

    perf = _perf()
    a, b = _images(n, 192, 4).float(), _images(n, 192, 5).float()
    timings = {}
    for name, fn in (("ours", lambda: ms_ssim(a, b)), ("pytorch-msssim", lambda: pytorch_msssim.ms_ssim(a, b, 255, size_average=False))):
        timings[name] = perf.median_seconds(fn, iters=iters)
        print(f"MS-SSIM {name:15s}: {n / timings[name]:8.1f} pairs/s")
    print(f"MS-SSIM speed ratio (ours / pytorch-msssim): {timings['pytorch-msssim'] / timings['ours']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048, help="SWD images per side")
    parser.add_argument("--res", type=int, default=128, help="SWD image size")
    parser.add_argument("--swd-iters", type=int, default=3, help="runs of our SWD (median); the official runs once")
    parser.add_argument("--inception-n", type=int, default=64)
    parser.add_argument("--inception-batch", type=int, default=16)
    parser.add_argument("--inception-compile", action="store_true", help="also time our network compiled")
    parser.add_argument("--msssim-n", type=int, default=64)
    parser.add_argument("--iters", type=int, default=3, help="timed runs (median) for Inception and MS-SSIM")
    parser.add_argument("--only", default="swd,inception,msssim", help="comma-separated subset to run")
    parser.add_argument("--skip-reference", action="store_true", help="time only our SWD")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"torch threads: {torch.get_num_threads()}")
    if "swd" in only:
        bench_swd(args.n, args.res, args.skip_reference, args.swd_iters)
    if "inception" in only:
        bench_inception(args.inception_n, args.inception_batch, args.iters, args.inception_compile)
    if "msssim" in only:
        bench_msssim(args.msssim_n, args.iters)


if __name__ == "__main__":
    main()
