"""Sliced Wasserstein distance exactly as PGGAN measures it (Karras et al. 2018, metrics/sliced_wasserstein).

Per image: a Laplacian pyramid (5x5 binomial filter, mirror edges) from full resolution down to 16 px,
128 random 7x7 neighbourhoods per level. Per level and set: each channel normalised to zero mean and
unit variance, then 4 repeats x 128 random unit directions; SWD is the mean absolute difference of the
sorted projections, x1e3, per level and averaged. The same algorithm, vectorised in torch: the pyramid
is two small matmuls per step (per chunk of 32 images, in cache), neighbourhoods one index_select into
preallocated buffers, the normalisation folded into the directions (no pass over the descriptors), and
the 128 directions of a repeat one matmul and one row-wise sort with the distance fused in.
A real-vs-real baseline (a second, independent draw of neighbourhoods from the real images) is always
reported beside it, to show the sampling noise floor.

The bootstrap interval of ``swd_avg`` uses a cheaper scheme than the feature metrics: at most
``SWD_RESAMPLES`` resamples of the images of both sides (their descriptors reused, each resampled set
normalised by its own moments as the official code does), each measured with one repeat of 128 fresh
directions per level instead of four, and re-centred on the value like the Frechet distances
(duplicated images raise SWD as a smaller set does).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

from lesion_metrics.bootstrap import recentred_interval
from lesion_metrics.registry import ImageSource, MetricOptions, NotEnoughImages, register_metric

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
CHUNK_IMAGES = 32
SWD_RESAMPLES = 20


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


def get_descriptors(level: torch.Tensor, positions: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N * 128, 3, 7, 7) neighbourhoods of ``level`` (N, 3, H, W) centred at ``positions``.

    Laid out as the official code's ``ogrid`` makes them: the first patch axis walks along x (a
    transposed patch). Isotropic directions make this immaterial for SWD, but it keeps descriptors
    identical to the official ones. One ``index_select`` over a view of every patch by the flat offset
    of its corner, written straight into ``out`` if given (2x faster than indexing (image, y, x) on one thread).
    """
    n, c, h, w = level.shape
    k = NHOOD_SIZE
    level = level.contiguous()
    sn, sc, sh, sw = level.stride()
    corners = level.as_strided((level.numel() - (c - 1) * sc - (k - 1) * (sh + sw), c, k, k), (1, sc, sw, sh))
    img = torch.arange(len(positions), device=level.device) // NHOODS_PER_IMAGE
    pos = positions.to(level.device) - k // 2
    return torch.index_select(corners, 0, img * sn + pos[:, 0] * sh + pos[:, 1] * sw, out=out)


def _channel_sums(desc: torch.Tensor) -> torch.Tensor:
    """(2, 3) float64 per-channel sum and sum of squares of (n, 3, 7, 7) descriptors (float32 column
    sums over the block, then float64)."""
    flat = desc.reshape(len(desc), -1)
    return torch.stack([flat.sum(0), flat.square().sum(0)]).view(2, 3, -1).double().sum(2)


def _moments(sums: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std per channel from :func:`_channel_sums` over ``count`` values each. A
    constant channel (e.g. flat generated images) gets std 1: the official code divides 0 by 0 there
    and reports NaN; dividing by 1 changes no finite result."""
    mean = sums[0] / count
    std = (sums[1] / count - mean.square()).clamp_min(0).sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def descriptor_moments(desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std (float64) of (n, 3, 7, 7) descriptors, over row blocks."""
    return _moments(sum(_channel_sums(block) for block in desc.split(8192)), desc[:, 0].numel())


def finalize_descriptors(desc: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The official finalisation: each channel normalised over the whole set, flattened. A list is
    concatenated first; a tensor is normalised in place. (The metric itself keeps raw descriptors and
    folds this normalisation into the directions, see :class:`Descriptors`.)"""
    desc = torch.cat(desc) if isinstance(desc, list) else desc.contiguous()
    mean, std = descriptor_moments(desc)
    n, c = desc.shape[:2]
    desc.sub_(mean.float().view(1, c, 1, 1)).div_(std.float().view(1, c, 1, 1))
    return desc.reshape(n, -1)


@dataclass
class Descriptors:
    """A set's raw (n, 147) descriptors and the per-channel moments the official code normalises by.

    The normalisation is folded into each direction d: ((x - m) / s) . d = x . (d / s) - (m / s) . d, so
    the descriptors are projected as they were gathered (no normalising pass over them), and the
    per-direction constant (m / s) . d, which does not change the sort order, is subtracted from the
    sorted rows.
    """

    raw: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, desc: torch.Tensor) -> Descriptors:
        """Raw (n, 3, 7, 7) descriptors, with their moments."""
        return cls(desc.reshape(len(desc), -1), *descriptor_moments(desc))

    @classmethod
    def normalized(cls, desc: torch.Tensor) -> Descriptors:
        """Already normalised (n, dim) descriptors (or any vectors to compare as they are)."""
        return cls(desc, torch.zeros(1, dtype=torch.float64, device=desc.device),
                   torch.ones(1, dtype=torch.float64, device=desc.device))

    def folded(self, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(directions, dim) float32 directions scaled by 1/std, and the (directions,) shifts."""
        per_column = len(self.raw[0]) // len(self.std)
        std = self.std.repeat_interleave(per_column)[:, None]
        mean = self.mean.repeat_interleave(per_column)[:, None]
        d = dirs.to(device=self.raw.device, dtype=torch.float64)
        return (d / std).T.float().contiguous(), ((mean / std) * d).sum(0)


def random_directions(dim: int, generator: torch.Generator, repeats: int = DIR_REPEATS,
                      per_repeat: int = DIRS_PER_REPEAT) -> torch.Tensor:
    """(repeats, dim, per_repeat) unit directions, normalised in float64 then cast, as the official."""
    dirs = torch.randn(repeats, dim, per_repeat, generator=generator, dtype=torch.float64)
    return (dirs / dirs.square().sum(dim=1, keepdim=True).sqrt()).float()


def sorted_projections(desc: Descriptors, dirs: torch.Tensor, reference: torch.Tensor | None = None,
                       out: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """(directions, neighbourhoods) normalised projections with each row sorted, and, given the sorted
    ``reference`` rows of another set, the sum of |sorted - reference| over all of them. ``out``, a
    (directions, neighbourhoods) float32 buffer, receives the projections: reusing one across calls
    saves faulting in fresh pages for every 134 MB result (the matmul runs 1.8x faster).

    On CPU each of torch's threads takes a block of rows (directions) and does all their work itself:
    projects them with a single-threaded NumPy (OpenBLAS) matmul, then sorts each row with NumPy (SIMD,
    in place, GIL released; ~10x faster per core than torch's CPU sort and than sorting down columns as
    the official code does), shifts it, compares it with the reference row and sums. On AMD CPUs
    torch.mm (MKL) runs this thin shape (K = 147) at about 0.6x OpenBLAS's rate, but a multi-threaded
    OpenBLAS call leaves its worker spinning, which slows the sorts that follow by 1.5x; per-thread
    single-threaded projection avoids both (0.15 -> 0.11 s per 128 directions of 262144
    neighbourhoods). On GPUs, one matmul and torch.sort.
    """
    weights, shift = desc.folded(dirs)
    shift = shift.float()
    if desc.raw.device.type != "cpu":
        proj = torch.mm(weights, desc.raw.T, out=out)  # contiguous rows: one direction each
        proj.copy_(torch.sort(proj, dim=1).values).sub_(shift[:, None])
        return proj, 0.0 if reference is None else (proj - reference).abs_().sum().item()
    proj = out if out is not None else _large_empty((len(weights), len(desc.raw)), "cpu")
    rows, shifts, w, raw_t = proj.numpy(), shift.numpy(), weights.numpy(), desc.raw.numpy().T
    ref = None if reference is None else reference.numpy()

    def work(block: slice) -> float:
        np.matmul(w[block], raw_t, out=rows[block])
        total = 0.0
        for i in range(block.start, block.stop):
            row = rows[i]
            row.sort()
            row -= shifts[i]
            if ref is not None:
                diff = np.subtract(row, ref[i], out=_scratch(len(row)))
                total += float(np.abs(diff, out=diff).sum())  # pairwise float32 sum per row, float64 across rows
        return total

    bounds = np.linspace(0, len(rows), max(1, min(torch.get_num_threads(), len(rows))) + 1).astype(int)
    with _blas_controller().limit(limits=1, user_api="blas"):
        return proj, sum(_sort_pool().map(work, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]))


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """Inspects the loaded BLAS libraries once (a fresh inspection costs milliseconds per call)."""
    return ThreadpoolController()


_local = threading.local()


def _scratch(n: int) -> np.ndarray:
    """A per-thread float32 row buffer (reused, so the comparison allocates nothing per row)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) != n:
        buf = _local.buf = np.empty(n, np.float32)
    return buf


@functools.lru_cache(maxsize=1)
def _sort_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=torch.get_num_threads())


def sliced_wasserstein(a: torch.Tensor | Descriptors, b: torch.Tensor | Descriptors, dirs: torch.Tensor) -> float:
    """Mean over repeats of mean |sort(a @ d) - sort(b @ d)|; ``a`` and ``b`` of equal shape, either
    normalised (n, dim) tensors or :class:`Descriptors`."""
    a, b = (x if isinstance(x, Descriptors) else Descriptors.normalized(x) for x in (a, b))
    if a.raw.shape != b.raw.shape or a.raw.ndim != 2:
        raise ValueError(f"SWD needs two descriptor sets of equal shape, got {tuple(a.raw.shape)} and {tuple(b.raw.shape)}")
    total = 0.0
    reference, scratch = projection_buffers(a, dirs)
    for d in dirs:
        sorted_projections(a, d, out=reference)
        total += sorted_projections(b, d, reference, out=scratch)[1] / reference.numel()
    return total / len(dirs)


def projection_buffers(desc: Descriptors, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two reusable (directions per repeat, neighbourhoods) buffers: the sorted reference rows and the
    rows compared with them."""
    shape = (dirs.shape[-1], len(desc.raw))
    return _large_empty(shape, desc.raw.device), _large_empty(shape, desc.raw.device)


def _large_empty(shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """An uninitialised float32 buffer of hundreds of MB. On CPU allocated by NumPy, which advises the
    kernel to back large arrays with transparent huge pages: first touching them costs half as much
    as with torch's 4 KB pages (154 MB: 32 against 60 ms)."""
    if torch.device(device).type == "cpu":
        return torch.from_numpy(np.empty(shape, np.float32))
    return torch.empty(shape, device=device)


def collect_descriptors(source: ImageSource, count: int, generator: torch.Generator, device: str,
                        draws: int = 1, progress: bool = False) -> tuple[list[list[Descriptors]], list[int]]:
    """Per draw, per pyramid level, the descriptors of the first ``count`` images, gathered into
    preallocated buffers (only descriptors are kept, never the images), with their moments.

    Positions are drawn per batch; the pyramid, gather and moment sums then run per chunk of 32
    images, so that a 128 px chunk's pyramid (8 MB) is still in cache when its patches are gathered.
    (Chunks spread over Python threads cost more CPU time: nested OpenMP teams.)
    """
    buffers: list[list[torch.Tensor]] = []
    sums: list[list[torch.Tensor]] = []
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
            buffers = [[_large_empty((size, 3, NHOOD_SIZE, NHOOD_SIZE), device) for _ in resolutions]
                       for _ in range(draws)]
            sums = [[torch.zeros(2, 3, dtype=torch.float64) for _ in resolutions] for _ in range(draws)]
        positions = [[sample_positions(len(batch), res, res, generator) for res in resolutions] for _ in range(draws)]

        for first in range(0, len(batch), CHUNK_IMAGES):
            images = batch[first:first + CHUNK_IMAGES]
            rows = slice(first * NHOODS_PER_IMAGE, (first + len(images)) * NHOODS_PER_IMAGE)
            out_rows = slice((filled + first) * NHOODS_PER_IMAGE, (filled + first + len(images)) * NHOODS_PER_IMAGE)
            for lod, level in enumerate(laplacian_pyramid(images.to(device), len(resolutions))):
                for draw in range(draws):
                    out = buffers[draw][lod][out_rows]
                    get_descriptors(level, positions[draw][lod][rows], out=out)
                    sums[draw][lod] += _channel_sums(out).cpu()
        filled += len(batch)
    bar.close()
    if filled != count:
        raise NotEnoughImages(f"swd: {source.name} yielded {filled} images, expected {count}")
    values = count * NHOODS_PER_IMAGE * NHOOD_SIZE**2
    return [[Descriptors(buf.view(len(buf), -1), *(m.to(device) for m in _moments(total, values)))
             for buf, total in zip(levels, totals)] for levels, totals in zip(buffers, sums)], resolutions


def resampled_descriptors(desc: Descriptors, images: torch.Tensor) -> Descriptors:
    """The descriptors of the drawn ``images`` (indices, repeats allowed; each image owns a block of
    128 consecutive rows), with their own moments."""
    rows = (images[:, None] * NHOODS_PER_IMAGE + torch.arange(NHOODS_PER_IMAGE)).flatten().to(desc.raw.device)
    return Descriptors.of(desc.raw.index_select(0, rows).view(-1, 3, NHOOD_SIZE, NHOOD_SIZE))


def swd_interval(real: list[Descriptors], fake: list[Descriptors], count: int, value: float, resamples: int,
                 generator: torch.Generator) -> tuple[float, float]:
    """Interval of the level-averaged SWD (x1e3) over ``resamples`` image resamples of both sides."""
    averages = []
    for _ in range(resamples):
        drawn = [torch.randint(0, count, (count,), generator=generator) for _ in range(2)]
        levels = [sliced_wasserstein(resampled_descriptors(r, drawn[0]), resampled_descriptors(f, drawn[1]),
                                     random_directions(r.raw.shape[1], generator, repeats=1)) * 1e3
                  for r, f in zip(real, fake)]
        averages.append(sum(levels) / len(levels))
    return recentred_interval(averages, value)


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
        dirs = random_directions(real[lod].raw.shape[1], generator)
        reference, scratch = projection_buffers(real[lod], dirs)
        for d in dirs:
            sorted_projections(real[lod], d, out=reference)
            sums["swd"] += sorted_projections(fake[lod], d, reference, out=scratch)[1] / reference.numel()
            sums["swd_real_baseline"] += sorted_projections(real_again[lod], d, reference, out=scratch)[1] / reference.numel()
        for name, total in sums.items():
            dists[name].append(total / len(dirs) * 1e3)
    out = {}
    for name, values in dists.items():
        out.update({f"{name}_{res}": d for res, d in zip(res_real, values)})
        out[f"{name}_avg"] = sum(values) / len(values)
    if opts.bootstrap:
        resamples = min(opts.bootstrap, SWD_RESAMPLES)
        opts.interval("swd_avg", *swd_interval(real, fake, count, out["swd_avg"], resamples, generator))
    return out
