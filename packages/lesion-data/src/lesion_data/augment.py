"""On-the-fly augmentation applied identically to images and masks.

Lesions have no canonical orientation, so the 8 symmetries of the square (flips and 90-degree
rotations, the dihedral group D4) are label-preserving. Each element is a composition of an
optional horizontal flip, vertical flip and transpose, drawn per sample and applied to the whole
batch with ``torch.where`` (no per-sample Python loop).
"""

from __future__ import annotations

import torch


def dihedral_codes(batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Random element of D4 per sample as a 3-bit code (bit 0 h-flip, bit 1 v-flip, bit 2 transpose)."""
    return torch.randint(0, 8, (batch,), generator=generator).to(device)


def apply_dihedral(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Apply per-sample D4 elements to square tensors (B, ..., H, W)."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral augmentation needs square tensors, got {tuple(x.shape)}")
    shape = (-1,) + (1,) * (x.dim() - 1)
    codes = codes.to(x.device).view(shape)
    x = torch.where(codes & 1 != 0, x.flip(-1), x)
    x = torch.where(codes & 2 != 0, x.flip(-2), x)
    return torch.where(codes & 4 != 0, x.transpose(-1, -2), x)


def random_dihedral(
    images: torch.Tensor, masks: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same random flip/90-degree rotation for each image and its mask (B, C, H, W) / (B, [1,] H, W)."""
    codes = dihedral_codes(images.shape[0], generator, images.device)
    return apply_dihedral(images, codes), None if masks is None else apply_dihedral(masks, codes)


__all__ = ["random_dihedral", "apply_dihedral", "dihedral_codes"]
