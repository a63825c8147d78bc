"""DCGAN (Radford et al. 2016), the unconditional baseline of the PGGAN comparison.

Faithful to the paper's guidelines and its 64 px reference architecture: the generator projects
``z`` to a 4x4 map with a transposed convolution, then doubles the resolution with 4x4 stride-2
transposed convolutions, batch norm and ReLU after every layer but the last, tanh output; the
discriminator mirrors it with 4x4 stride-2 convolutions, leaky ReLU 0.2, batch norm on every layer
but the first, and a final 4x4 convolution to one logit. Weights ~ N(0, 0.02) (batch-norm scales
~ N(1, 0.02), biases 0, as the authors' code). Channels at 64 px: 512-256-128-64 (``ngf = ndf = 64``).

Deviations: other resolutions (32..256) add or remove a block; the widest layer is capped at
``max_channels`` (512, the paper's widest) instead of doubling again at 128/256 px. The
discriminator returns ``(logits, None)`` so it is a critic for ``lesion_metrics.losses``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from lesion_models.hub import Pretrained, register

__all__ = ["DCGANConfig", "DCGANGenerator", "DCGANDiscriminator", "dcgan_init"]


@dataclasses.dataclass
class DCGANConfig:
    """Shared by G and D."""

    resolution: int = 64  # a power of two in 32..256
    channels: int = 3
    z_dim: int = 100
    ngf: int = 64  # generator features at the last hidden layer
    ndf: int = 64  # discriminator features at the first layer
    max_channels: int = 512
    lrelu_slope: float = 0.2

    def __post_init__(self):
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if log2 != int(log2) or not 5 <= log2 <= 8:
            raise ValueError(f"DCGANConfig.resolution must be a power of two in 32..256, got {self.resolution}")

    @property
    def num_blocks(self) -> int:
        """Stride-2 layers between 4x4 and the full resolution."""
        return int(math.log2(self.resolution)) - 2

    def width(self, base: int, level: int) -> int:
        """Features ``level`` blocks away from the image (0 = next to it)."""
        return min(base * 2**level, self.max_channels)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialisation: conv weights N(0, 0.02), BN scale N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@register
class DCGANGenerator(Pretrained, nn.Module):
    """``G(z, labels=None) -> (N, 3, R, R)`` in [-1, 1]; unconditional (``num_classes`` is 0)."""

    config_class = DCGANConfig
    num_classes = 0

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        self.resolution, self.z_dim = config.resolution, config.z_dim
        n = config.num_blocks
        widths = [config.width(config.ngf, level) for level in range(n - 1, -1, -1)]  # 4x4 ... R/2
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.z_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], config.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            raise ValueError("DCGANGenerator is unconditional; labels must be None")
        return self.net(z.view(z.shape[0], -1, 1, 1))


@register
class DCGANDiscriminator(Pretrained, nn.Module):
    """``D(images) -> (logits (N,), None)``."""

    config_class = DCGANConfig
    num_classes = 0

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        n, slope = config.num_blocks, config.lrelu_slope
        widths = [config.width(config.ndf, level) for level in range(n)]  # R/2 ... 4x4
        layers: list[nn.Module] = [nn.Conv2d(config.channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(slope, True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(slope, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.net(images).flatten(), None
