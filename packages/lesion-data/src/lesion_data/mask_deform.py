"""New plausible lesion masks from a real one: random rotation, scaling, shift and a smooth
elastic deformation (Simard et al. 2003 style), so one real mask yields many synthetic lesions
for mask-to-image synthesis.

Vectorised in torch: every variant's affine matrix and displacement field are drawn at once, the
field is random noise on a coarse ``grid`` x ``grid`` lattice upsampled bicubically (smooth by
construction), and one ``grid_sample`` warps the whole batch; the warped mask is thresholded at
0.5. The default elastic amplitude is small against the lattice spacing, so the warp stays
one-to-one and a single lesion stays a single lesion (no connected-component cleanup needed).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def deform_masks(
    mask: np.ndarray | torch.Tensor,
    n: int,
    seed: int = 0,
    rotation: float = 180.0,
    scale: tuple[float, float] = (0.8, 1.2),
    shift: float = 0.05,
    elastic: float = 0.04,
    grid: int = 5,
) -> np.ndarray:
    """``n`` variants of one binary mask (H, W) as uint8 (n, H, W) with values 0/1.

    rotation: maximum absolute angle in degrees; scale: range of the isotropic zoom; shift:
    maximum translation as a fraction of the image side; elastic: maximum displacement of a
    lattice point as a fraction of the side; grid: lattice points per side."""
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).float()
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(m.shape)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale range {scale} must be positive and increasing")
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    m = (m > (0.5 if m.max() <= 1 else 127)).float()
    h, w = m.shape
    gen = torch.Generator().manual_seed(seed)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(rotation)
    zoom = scale[0] + torch.rand(n, generator=gen) * (scale[1] - scale[0])
    offset = (torch.rand(n, 2, generator=gen) * 2 - 1) * shift * 2  # grid units span 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # Output -> input sampling: rotate by -angle and shrink by zoom (so the lesion grows by zoom).
    # affine_grid works in [-1, 1] coordinates per axis; the aspect factors make the rotation
    # rigid in pixels on non-square masks (ISIC masks are rarely square).
    aspect = h / w
    theta = torch.stack([torch.stack([cos, -sin * aspect, offset[:, 0]], 1),
                         torch.stack([sin / aspect, cos, offset[:, 1]], 1)], 1)
    coords = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    coarse = (torch.rand(n, 2, grid, grid, generator=gen) * 2 - 1) * elastic * 2
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    warped = F.grid_sample(m.expand(n, 1, h, w), coords + field, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    return (warped[:, 0] > 0.5).to(torch.uint8).numpy()


__all__ = ["deform_masks"]
