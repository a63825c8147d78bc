"""A small U-Net lesion segmenter (Ronneberger et al. 2015, narrowed) for mask consistency:
trained on real images, it segments synthesized ones, and its Dice/IoU against the input masks
tells whether a translation model obeyed the layout.

``depth`` levels of (3x3 conv + BN + ReLU) x 2 with max-pool down and bilinear up + concat skip;
widths base, 2base, ... Output: one lesion logit per pixel.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from lesion_models.hub import Pretrained, register
from lesion_models.pix2pixhd import check_divisible


@dataclasses.dataclass
class UNetSegmenterConfig:
    in_channels: int = 3
    base: int = 16
    depth: int = 4  # number of 2x downsamplings


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
    )


@register
class UNetSegmenter(nn.Module, Pretrained):
    config_class = UNetSegmenterConfig

    def __init__(self, config: UNetSegmenterConfig):
        super().__init__()
        self.config = c = config
        widths = [c.base * 2**i for i in range(c.depth + 1)]
        self.down = nn.ModuleList(
            double_conv(c.in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(c.depth + 1)
        )
        self.up = nn.ModuleList(double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(c.depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    @property
    def stride(self) -> int:
        return 2**self.config.depth

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> lesion logits (B, 1, H, W)."""
        check_divisible(images, self.stride, type(self).__name__)
        skips = []
        x = images
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)
