"""MS-SSIM diversity as PGGAN measures it (the TF msssim.py that PGGAN ships, per image pair).

Consecutive generated images form pairs (0, 1), (2, 3), ...; each pair gets a 5-scale MS-SSIM with
Gaussian 11/1.5 windows ('valid' filtering), 2x2 box downsampling, weights
[0.0448, 0.2856, 0.3001, 0.2363, 0.1333], SSIM and contrast terms clipped at 0; the metric is the
mean over pairs, and the same on real images is the reference value (lower = more diverse).
Like the TF code (and unlike pytorch-msssim) images below 161 px work: the window shrinks to the
image size with a proportionally smaller sigma.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lesion_metrics.bootstrap import mean_interval, resample_rng
from lesion_metrics.registry import ImageSource, MetricOptions, NotEnoughImages, register_metric

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_window_1d(size: int, sigma: float, device=None) -> torch.Tensor:
    """1-D factor of MATLAB's fspecial('gaussian'), with the half-pixel offset for even sizes."""
    radius = size // 2
    start = -radius + (0.5 if size % 2 == 0 else 0.0)
    x = start + torch.arange(size, dtype=torch.float64, device=device)
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    c, k = x.shape[1], len(g)
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_and_contrast(a: torch.Tensor, b: torch.Tensor, max_val: float = 255.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair SSIM and contrast-structure terms (means over channels and positions)."""
    size = min(FILTER_SIZE, a.shape[2], a.shape[3])
    g = gaussian_window_1d(size, size * FILTER_SIGMA / FILTER_SIZE).to(a)
    stacked = _filter_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), g)
    mu1, mu2, s11, s22, s12 = stacked.chunk(5, dim=1)
    mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s11, s22, s12 = s11 - mu11, s22 - mu22, s12 - mu12
    c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2
    v1, v2 = 2.0 * s12 + c2, s11 + s22 + c2
    ssim = ((2.0 * mu12 + c1) * v1 / ((mu11 + mu22 + c1) * v2)).mean(dim=(1, 2, 3))
    return ssim, (v1 / v2).mean(dim=(1, 2, 3))


def ms_ssim(a: torch.Tensor, b: torch.Tensor, max_val: float = 255.0, weights=WEIGHTS) -> torch.Tensor:
    """MS-SSIM of each pair ``(a[i], b[i])``, images as floats in [0, max_val], shape (N, C, H, W)."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ms_ssim needs two (N, C, H, W) batches of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    levels = len(weights)
    if min(a.shape[2:]) < 2 ** (levels - 1):
        raise ValueError(f"ms_ssim with {levels} scales needs images of at least {2 ** (levels - 1)} px")
    if not a.is_floating_point():  # float64 stays float64 (gradcheck); uint8 works in float32 as TF
        a, b = a.float(), b.float()
    ssims, css = [], []
    for level in range(levels):
        ssim, cs = ssim_and_contrast(a, b, max_val)
        ssims.append(ssim)
        css.append(cs)
        if level < levels - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    w = torch.tensor(weights, dtype=torch.float64, device=a.device)
    cs = torch.stack(css[:-1]).double().clamp_min(0)
    return torch.prod(cs ** w[:-1, None], dim=0) * ssims[-1].double().clamp_min(0) ** w[-1]


def pair_msssim(source: ImageSource, device: str) -> torch.Tensor:
    """MS-SSIM of every consecutive pair of ``source`` (an odd image left over is dropped)."""
    scores, carry = [], None
    for batch in source.iterate():
        batch = batch.to(device)
        if carry is not None:
            batch = torch.cat([carry, batch])
        usable = len(batch) // 2 * 2
        carry = batch[usable:] if usable < len(batch) else None
        if usable:
            scores.append(ms_ssim(batch[0:usable:2], batch[1:usable:2]).cpu())
    if not scores:
        raise NotEnoughImages(f"msssim needs at least 2 {source.name} images (one pair), got {source.num_images}")
    return torch.cat(scores)


@register_metric("msssim")
def msssim(opts: MetricOptions) -> dict[str, float]:
    out = {}
    for result, source in (("msssim", opts.fake), ("msssim_real", opts.real)):
        scores = pair_msssim(source, opts.device)
        out[result] = scores.mean().item()
        if opts.bootstrap:
            # Each value is a mean over its own side's pairs: the pairs are resampled (as many
            # resamples as for the other metrics; a mean of stored scores costs nothing).
            opts.interval(result, *mean_interval(scores.numpy(), opts.bootstrap, resample_rng(opts.seed, result)))
    return out
