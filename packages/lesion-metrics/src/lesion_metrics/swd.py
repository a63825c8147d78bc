"""Sliced Wasserstein distance exactly as PGGAN measures it (Karras et al. 2018, metrics/sliced_wasserstein).

Per image: a Laplacian pyramid (5x5 binomial filter, mirror edges) from full resolution down to 16 px,
128 random 7x7 neighbourhoods per level. Per level and set: each channel normalised to zero mean and
unit variance, then 4 repeats x 128 random unit directions; SWD is the mean absolute difference of the
sorted projections, x1e3, per level and averaged. The same algorithm, vectorised in torch: the pyramid
is two small matmuls per step, neighbourhoods one strided gather, and the 128 directions of a
repeat one matmul and one row-wise sort.
A real-vs-real baseline (a second, independent draw of neighbourhoods from the real images) is always
reported beside it, to show the sampling noise floor.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from lesion_metrics.registry import ImageSource, MetricOptions, NotEnoughImages, register_metric

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16


def swd_resolutions(size: int) -> list[int]:
    """Pyramid levels from full resolution down to 16 px."""
    out = []
    while size >= MIN_RESOLUTION:
        out.append(size)
        size //= 2
    return out


def _taps(x: torch.Tensor, dim: int, start: int, length: int, stride: int) -> torch.Tensor:
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, start + length, stride)
    return x[tuple(index)]


def _mirror_pad2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Pad 2 on both sides, mirrored about the edge sample (scipy.ndimage 'mirror')."""
    n = x.shape[dim]
    return torch.cat([x.narrow(dim, 2, 1), x.narrow(dim, 1, 1), x, x.narrow(dim, n - 2, 1), x.narrow(dim, n - 3, 1)], dim)


def _down_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[1 4 6 4 1]/16 filter along ``dim`` evaluated at every second sample (filter, then ::2)."""
    n = x.shape[dim]
    p = _mirror_pad2(x, dim)
    t = [_taps(p, dim, k, n, 2) for k in range(5)]
    return (t[0] + t[4]) * (1 / 16) + (t[1] + t[3]) * (4 / 16) + t[2] * (6 / 16)


def _up_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-insert x2 along ``dim`` then filter with 2 x [1 4 6 4 1]/16, mirror edges, computed
    polyphase: even outputs (x[i-1] + 6 x[i] + x[i+1]) / 8, odd outputs (x[i] + x[i+1]) / 2. In the
    zero-inserted signal the mirror makes x[-1] = x[1] and x[n] = x[n-1]."""
    n = x.shape[dim]
    prev = torch.cat([x.narrow(dim, 1, 1), x.narrow(dim, 0, n - 1)], dim)
    nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    even = (prev + nxt) * (1 / 8) + x * (6 / 8)
    odd = (x + nxt) * 0.5
    out = torch.stack([even, odd], dim=dim + 1 if dim >= 0 else dim)
    shape = list(x.shape)
    shape[dim] = 2 * n
    return out.reshape(shape)


@functools.lru_cache(maxsize=32)
def _resampling_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n/2, n) filter-and-decimate and (n, n/2) upsample matrices: the 1-D operators applied to the
    identity, so that each pyramid step is two small matmuls (BLAS) instead of a 5x5 convolution."""
    return _down_axis(torch.eye(n), 0), _up_axis(torch.eye(n // 2), 0)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """PGGAN's pyr_down (5x5 binomial, mirror edges, ::2); the binomial filter is separable."""
    down_h, _ = _resampling_matrices(x.shape[2])
    down_w, _ = _resampling_matrices(x.shape[3])
    return down_h.to(x) @ x @ down_w.to(x).T


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """PGGAN's pyr_up (zero-insert, 4 x 5x5 binomial, mirror edges)."""
    _, up_h = _resampling_matrices(2 * x.shape[2])
    _, up_w = _resampling_matrices(2 * x.shape[3])
    return up_h.to(x) @ x @ up_w.to(x).T


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    pyramid = [images.float()]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def sample_positions(num_images: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(N * 128, 2) neighbourhood centres (y, x), drawn in [3, size - 4] like the official randint."""
    half = NHOOD_SIZE // 2
    n = num_images * NHOODS_PER_IMAGE
    y = torch.randint(half, height - half, (n,), generator=generator)
    x = torch.randint(half, width - half, (n,), generator=generator)
    return torch.stack([y, x], dim=1)


def get_descriptors(level: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(N * 128, 3, 7, 7) neighbourhoods of ``level`` (N, 3, H, W) centred at ``positions``.

    Laid out as the official code's ``ogrid`` makes them: the first patch axis walks along x (a
    transposed patch). Isotropic directions make this immaterial for SWD, but it keeps descriptors
    identical to the official ones.
    """
    n, c, h, w = level.shape
    k = NHOOD_SIZE
    level = level.contiguous()
    sn, sc, sh, sw = level.stride()
    patches = level.as_strided((n, h - k + 1, w - k + 1, c, k, k), (sn, sh, sw, sc, sw, sh))
    img = torch.arange(len(positions), device=level.device) // NHOODS_PER_IMAGE
    pos = positions.to(level.device) - k // 2
    return patches[img, pos[:, 0], pos[:, 1]]


def finalize_descriptors(desc: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Normalise each channel over the whole set (population std), flatten. A list is concatenated
    first; a tensor is normalised in place. Moments: float32 sums over row blocks (reductions over a
    view, no transposed copy), accumulated in float64."""
    desc = torch.cat(desc) if isinstance(desc, list) else desc.contiguous()
    n, c = desc.shape[:2]
    total = torch.zeros(c, dtype=torch.float64, device=desc.device)
    total_sq = torch.zeros(c, dtype=torch.float64, device=desc.device)
    for block in desc.view(n, c, -1).split(8192):
        total += block.sum(dim=(0, 2)).double()
        total_sq += block.square().sum(dim=(0, 2)).double()
    count = desc[:, 0].numel()
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    # A constant channel (e.g. flat generated images) is all zeros after centring; the official
    # code divides 0 by 0 there and reports NaN. Dividing by 1 changes no finite result.
    std = torch.where(std > 0, std, torch.ones_like(std))
    desc.sub_(mean.float().view(1, c, 1, 1)).div_(std.float().view(1, c, 1, 1))
    return desc.reshape(n, -1)


def random_directions(dim: int, generator: torch.Generator, repeats: int = DIR_REPEATS,
                      per_repeat: int = DIRS_PER_REPEAT) -> torch.Tensor:
    """(repeats, dim, per_repeat) unit directions, normalised in float64 then cast, as the official."""
    dirs = torch.randn(repeats, dim, per_repeat, generator=generator, dtype=torch.float64)
    return (dirs / dirs.square().sum(dim=1, keepdim=True).sqrt()).float()


def sorted_projections(desc: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """(directions, neighbourhoods) projections, each row sorted.

    On CPU the sort is NumPy's (SIMD, in place on contiguous rows, which releases the GIL, so row
    blocks sort on all of torch's threads): ~10x faster per core here than torch's CPU sort and than
    sorting down columns as the official code does. On GPUs, torch.sort.
    """
    proj = torch.mm(dirs.T.to(desc), desc.T)  # contiguous rows: one direction each
    if proj.device.type != "cpu":
        return torch.sort(proj, dim=1).values
    blocks = np.array_split(proj.numpy(), max(1, min(torch.get_num_threads(), len(proj))))
    list(_sort_pool().map(lambda block: block.sort(axis=1), blocks))
    return proj


@functools.lru_cache(maxsize=1)
def _sort_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=torch.get_num_threads())


def projected_distance(sorted_a: torch.Tensor, sorted_b: torch.Tensor) -> float:
    return (sorted_a - sorted_b).abs_().mean().item()


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, dirs: torch.Tensor) -> float:
    """Mean over repeats of mean |sort(a @ d) - sort(b @ d)|; ``a`` and ``b`` of equal shape."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"SWD needs two descriptor sets of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return sum(projected_distance(sorted_projections(a, d), sorted_projections(b, d)) for d in dirs) / len(dirs)


def collect_descriptors(source: ImageSource, count: int, generator: torch.Generator, device: str,
                        draws: int = 1, progress: bool = False) -> tuple[list[list[torch.Tensor]], list[int]]:
    """Per draw, per pyramid level, the finalized descriptors of the first ``count`` images, gathered
    batch by batch into preallocated buffers (only descriptors are kept, never the images)."""
    buffers: list[list[torch.Tensor]] = []
    resolutions: list[int] = []
    filled = 0
    bar = tqdm(total=count, desc=f"swd {source.name}", unit="img", disable=not progress, leave=False)
    for batch in source.iterate(count):
        bar.update(len(batch))
        if batch.shape[2] != batch.shape[3]:
            raise ValueError(f"swd: {source.name} images must be square, got {tuple(batch.shape[2:])}")
        if not resolutions:
            resolutions = swd_resolutions(batch.shape[2])
            if not resolutions:
                raise NotEnoughImages(f"swd needs images of at least {MIN_RESOLUTION} px, got {batch.shape[2]}")
            size = count * NHOODS_PER_IMAGE
            buffers = [[torch.empty(size, 3, NHOOD_SIZE, NHOOD_SIZE, device=device) for _ in resolutions]
                       for _ in range(draws)]
        pyramid = laplacian_pyramid(batch.to(device), len(resolutions))
        rows = slice(filled * NHOODS_PER_IMAGE, (filled + len(batch)) * NHOODS_PER_IMAGE)
        for draw in range(draws):
            for lod, level in enumerate(pyramid):
                positions = sample_positions(len(level), level.shape[2], level.shape[3], generator)
                buffers[draw][lod][rows] = get_descriptors(level, positions)
        filled += len(batch)
    bar.close()
    if filled != count:
        raise NotEnoughImages(f"swd: {source.name} yielded {filled} images, expected {count}")
    return [[finalize_descriptors(level) for level in levels] for levels in buffers], resolutions


@register_metric("swd")
def swd(opts: MetricOptions) -> dict[str, float]:
    count = min(opts.real.num_images, opts.fake.num_images)
    if count < 1:
        raise NotEnoughImages("swd needs at least 1 real and 1 generated image")
    if opts.real.num_images != opts.fake.num_images:
        opts.note(f"swd: uses {count} images of each side (equal counts needed)")
    generator = torch.Generator().manual_seed(opts.seed)
    (real, real_again), res_real = collect_descriptors(opts.real, count, generator, opts.device, 2, opts.progress)
    (fake,), res_fake = collect_descriptors(opts.fake, count, generator, opts.device, 1, opts.progress)
    if res_real != res_fake:
        raise ValueError(f"swd: real images are {res_real[0]} px but generated ones {res_fake[0]} px")
    dists: dict[str, list[float]] = {"swd": [], "swd_real_baseline": []}
    for lod in range(len(res_real)):
        # Fresh directions per level (as the official); the same ones for fakes and the baseline.
        # Real projections are sorted once per direction set and shared by both comparisons.
        sums = {"swd": 0.0, "swd_real_baseline": 0.0}
        dirs = random_directions(real[lod].shape[1], generator)
        for d in dirs:
            reference = sorted_projections(real[lod], d)
            sums["swd"] += projected_distance(reference, sorted_projections(fake[lod], d))
            sums["swd_real_baseline"] += projected_distance(reference, sorted_projections(real_again[lod], d))
        for name, total in sums.items():
            dists[name].append(total / len(dirs) * 1e3)
    out = {}
    for name, values in dists.items():
        out.update({f"{name}_{res}": d for res, d in zip(res_real, values)})
        out[f"{name}_avg"] = sum(values) / len(values)
    return out
