"""Overlap of binary segmentations: Dice (F1) and IoU (Jaccard), per image and averaged.

Used for mask consistency: a segmenter's masks on synthesized images against the masks that were
the generator's input. Inputs are tensors or arrays of shape (N, H, W) or (N, 1, H, W): booleans,
{0, 1}, or probabilities (thresholded at ``threshold``). An image where both masks are empty
scores 1 (perfect agreement), the ISIC challenge's convention for empty ground truth aside.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["dice_iou"]


def _binary(masks, threshold: float) -> torch.Tensor:
    masks = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be (N, H, W) or (N, 1, H, W), got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (N, 1, H, W), got {tuple(masks.shape)}")
    return masks.bool() if masks.dtype == torch.bool else masks.float() > threshold


def dice_iou(predicted, target, threshold: float = 0.5) -> dict[str, float | list[float]]:
    """Mean Dice and IoU over images, plus the per-image values (``dice_per_image``, ``iou_per_image``)."""
    pred, true = _binary(predicted, threshold), _binary(target, threshold)
    if pred.shape != true.shape:
        raise ValueError(f"predicted masks {tuple(pred.shape)} and targets {tuple(true.shape)} differ in shape")
    if len(pred) == 0:
        raise ValueError("dice_iou: no masks given")
    inter = (pred & true).flatten(1).sum(1).double()
    sizes = pred.flatten(1).sum(1).double() + true.flatten(1).sum(1).double()
    union = sizes - inter
    empty = sizes == 0
    dice = torch.where(empty, 1.0, 2 * inter / sizes.clamp_min(1))
    iou = torch.where(empty, 1.0, inter / union.clamp_min(1))
    return {
        "dice": dice.mean().item(),
        "iou": iou.mean().item(),
        "dice_per_image": dice.tolist(),
        "iou_per_image": iou.tolist(),
    }
