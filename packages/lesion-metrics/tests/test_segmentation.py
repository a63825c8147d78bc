import numpy as np
import pytest
import torch
from lesion_metrics.segmentation import dice_iou


def test_dice_iou_hand_values():
    pred = np.zeros((3, 4, 4), np.uint8)
    true = np.zeros((3, 4, 4), np.uint8)
    pred[0, :2] = 1  # 8 px
    true[0, 1:3] = 1  # 8 px, 4 overlap -> dice 8/16, iou 4/12
    pred[1, 0, 0] = 1  # disjoint -> 0, 0
    true[1, 3, 3] = 1
    # image 2: both empty -> 1, 1
    result = dice_iou(pred, true)
    assert result["dice_per_image"] == pytest.approx([0.5, 0.0, 1.0])
    assert result["iou_per_image"] == pytest.approx([1 / 3, 0.0, 1.0])
    assert result["dice"] == pytest.approx(0.5) and result["iou"] == pytest.approx(4 / 9)


def test_probabilities_threshold_and_channel_dim():
    probs = torch.tensor([[[[0.2, 0.7], [0.9, 0.4]]]])
    true = torch.tensor([[[0, 1], [1, 0]]], dtype=torch.bool)
    assert dice_iou(probs, true)["dice"] == 1.0
    assert dice_iou(probs, true, threshold=0.8)["iou"] == pytest.approx(0.5)


def test_shape_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        dice_iou(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, 1, H, W\)"):
        dice_iou(np.zeros((1, 3, 4, 4)), np.zeros((1, 3, 4, 4)))
