"""Label maps for conditional (mask-to-image) models, after pix2pixHD's semantic + edge inputs.

From a lesion mask and a diagnosis: the integer map (0 background skin, 1+k lesion of class k),
its one-hot form (1 + num_classes channels) and a boundary map (1 on pixels whose 4-neighbourhood
contains another label, the analogue of pix2pixHD's instance edge map).
"""

from __future__ import annotations

import torch


def _squeeze_mask(mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"masks must be (B, 1, H, W) or (B, H, W), got {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"masks must be (B, 1, H, W) or (B, H, W), got {tuple(mask.shape)}")
    return mask


def label_map(mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Integer map long (B, H, W): 0 outside the lesion, 1 + label inside (mask > 0.5)."""
    mask = _squeeze_mask(mask)
    labels = torch.as_tensor(labels, device=mask.device).long().view(-1, 1, 1)
    if labels.shape[0] != mask.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {mask.shape[0]} masks")
    # Meta tensors (shape-only tracing) have no values to check.
    if not labels.is_meta and (labels < 0).any():
        raise ValueError("label maps need known diagnoses; got label -1 (unknown)")
    return torch.where(mask > 0.5, labels + 1, torch.zeros_like(labels))


def one_hot_label_map(mask: torch.Tensor, labels: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """One-hot float (B, 1 + num_classes, H, W); channel 0 is background skin."""
    lm = label_map(mask, labels)
    if not lm.is_meta and int(lm.max()) > num_classes:
        raise ValueError(f"label {int(lm.max()) - 1} out of range for {num_classes} classes")
    return torch.nn.functional.one_hot(lm, num_classes + 1).permute(0, 3, 1, 2).to(dtype)


def boundary_map(label_map: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Float (B, 1, H, W): 1 where a pixel differs from any 4-neighbour (both sides of a border)."""
    lm = label_map
    if lm.dim() == 4:
        lm = lm[:, 0]
    edge = torch.zeros_like(lm, dtype=torch.bool)
    dh = lm[:, :, 1:] != lm[:, :, :-1]
    dv = lm[:, 1:, :] != lm[:, :-1, :]
    edge[:, :, 1:] |= dh
    edge[:, :, :-1] |= dh
    edge[:, 1:, :] |= dv
    edge[:, :-1, :] |= dv
    return edge.unsqueeze(1).to(dtype)


__all__ = ["label_map", "one_hot_label_map", "boundary_map"]
