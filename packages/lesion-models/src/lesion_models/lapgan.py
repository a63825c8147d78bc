"""LAPGAN (Denton et al. 2015): a Laplacian pyramid of GANs, the second baseline of the comparison.

The image pyramid: ``down`` halves the size, ``up`` doubles it; the Laplacian pyramid of an image
is its coarsest Gaussian level plus one residual per finer level, ``h_k = I_k - up(down(I_k))``, so
``I_k = up(I_{k+1}) + h_k`` exactly (:func:`laplacian_pyramid`, :func:`reconstruct`). ``down`` is
the official code's (facebook/eyescream shrinks with Torch's ``image.scale``, whose bilinear mode
averages 2x2 blocks at a factor of two); ``up`` interpolates bilinearly at source position
``(j + 1/2) / 2 - 1/2``, centred on ``down``'s blocks (``align_corners=False``).

The networks (Denton et al.'s CIFAR-10 models): an unconditional fully connected GAN at the
coarsest level (G: z -> 1200 -> 1200 -> image, ReLU; D: 600 -> 600 -> logit, ReLU, dropout);
at every finer level a conditional convolutional G takes the upsampled coarser image plus one
noise plane and returns the residual (5x5 convs, ReLU, linear output), and a convolutional D
judges ``residual + upsampled coarse`` concatenated with the upsampled coarse image (5x5 convs,
ReLU, dropout, one logit). Levels are trained independently on the real pyramid (lesion_train).

Sampling is deterministic given ``z``: the latent holds the coarse code and every noise plane,
``z_dim = coarse_z_dim + sum(r * r)`` over the finer levels' resolutions ``r``, so the sampling
and evaluation code that draws ``randn(n, G.z_dim)`` works unchanged. The paper draws the code and
the noise planes uniformly in [-1, 1]; the generator maps its Gaussian inputs there through the
normal CDF (:func:`uniform_noise`), which gives exactly that distribution. The coarse networks are
initialised as in the official code (facebook/eyescream ``train_cifar.lua``: weights N(0, 0.05) in
G, N(0, 0.005) in D, zero biases); the convolutional levels keep Torch's default initialisation,
which PyTorch's equals (uniform, bound 1/sqrt(fan_in)).

Deviations: eyescream enlarges with ``image.scale`` too, at source position ``j (n - 1) / (2n - 1)``
(corners aligned), up to a quarter of a source pixel off ``down``'s block centres; that enlarges the
real residuals (docs/baselines.md), so ``up`` stays centred on the blocks; the
coarse generator ends in tanh (the data are in [-1, 1]) and has ReLU after both hidden layers
(eyescream ``train_cifar.lua``: sigmoid after the second); a level discriminator sees ``residual +
upsampled coarse`` concatenated with its condition through padded convolutions (eyescream: the sum
alone, unpadded); a level generator's input is ``[condition, noise]`` (eyescream: ``[noise,
condition]``, the same function with the first layer's input channels in another order); the
generator clamps its output to [-1, 1] in eval mode only; widths are options.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lesion_models.hub import Pretrained, register

__all__ = ["LAPGANConfig", "LAPGANGenerator", "LAPGANDiscriminator", "down", "up", "uniform_noise", "laplacian_pyramid", "reconstruct"]


def down(images: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(images, 2)


def up(images: torch.Tensor) -> torch.Tensor:
    # Centred on down's blocks, not corner-aligned like eyescream's (see Deviations above).
    return F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)


def uniform_noise(z: torch.Tensor) -> torch.Tensor:
    """N(0, 1) -> U(-1, 1) elementwise: ``2 Phi(z) - 1 = erf(z / sqrt(2))``."""
    return torch.erf(z * math.sqrt(0.5))


def _init_linear(net: nn.Sequential, std: float) -> None:
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)


def laplacian_pyramid(images: torch.Tensor, levels: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(coarsest, residuals)`` with ``residuals`` ordered coarse to fine (the last at full size)."""
    residuals = []
    for _ in range(levels):
        coarser = down(images)
        residuals.append(images - up(coarser))
        images = coarser
    return images, residuals[::-1]


def reconstruct(coarsest: torch.Tensor, residuals: list[torch.Tensor]) -> torch.Tensor:
    image = coarsest
    for residual in residuals:
        image = up(image) + residual
    return image


@dataclasses.dataclass
class LAPGANConfig:
    """Shared by G and D."""

    resolution: int = 32  # final, a power of two >= 2 * coarse_resolution
    coarse_resolution: int = 8
    channels: int = 3
    coarse_z_dim: int = 100
    coarse_g_hidden: int = 1200
    coarse_d_hidden: int = 600
    level_g_features: int = 128
    level_g_layers: int = 3  # convolutions per level generator, the last one to the residual
    level_d_features: int = 128
    dropout: float = 0.5

    def __post_init__(self):
        log2, clog2 = math.log2(max(self.resolution, 1)), math.log2(max(self.coarse_resolution, 1))
        if log2 != int(log2) or clog2 != int(clog2) or not 2 <= clog2 < log2 <= 10:
            raise ValueError(f"LAPGANConfig needs powers of two 4 <= coarse_resolution < resolution <= 1024, "
                             f"got {self.coarse_resolution} and {self.resolution}")

    @property
    def level_resolutions(self) -> list[int]:
        """Resolutions of the residual levels, coarse to fine."""
        return [2**k for k in range(int(math.log2(self.coarse_resolution)) + 1, int(math.log2(self.resolution)) + 1)]

    @property
    def z_dim(self) -> int:
        return self.coarse_z_dim + sum(r * r for r in self.level_resolutions)


def _level_generator(c: LAPGANConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = c.channels + 1  # upsampled coarse image + one noise plane
    for _ in range(c.level_g_layers - 1):
        layers += [nn.Conv2d(cin, c.level_g_features, 5, padding=2), nn.ReLU(True)]
        cin = c.level_g_features
    layers.append(nn.Conv2d(cin, c.channels, 5, padding=2))
    return nn.Sequential(*layers)


def _level_discriminator(c: LAPGANConfig, resolution: int) -> nn.Sequential:
    f = c.level_d_features
    return nn.Sequential(
        nn.Conv2d(2 * c.channels, f, 5, padding=2), nn.ReLU(True),
        nn.Conv2d(f, f, 5, stride=2, padding=2), nn.ReLU(True),
        nn.Flatten(), nn.Dropout(c.dropout), nn.Linear(f * (resolution // 2) ** 2, 1),
    )


@register
class LAPGANGenerator(Pretrained, nn.Module):
    """``G(z, labels=None) -> (N, 3, R, R)``: coarse sample, then upsample + residual per level."""

    config_class = LAPGANConfig
    num_classes = 0

    def __init__(self, config: LAPGANConfig):
        super().__init__()
        self.config = config
        self.resolution, self.z_dim = config.resolution, config.z_dim
        c, h = config, config.coarse_g_hidden
        self.coarse_net = nn.Sequential(
            nn.Linear(c.coarse_z_dim, h), nn.ReLU(True), nn.Linear(h, h), nn.ReLU(True),
            nn.Linear(h, c.channels * c.coarse_resolution**2), nn.Tanh(),
        )
        _init_linear(self.coarse_net, 0.05)
        self.levels = nn.ModuleList(_level_generator(c) for _ in c.level_resolutions)

    def coarse(self, z: torch.Tensor) -> torch.Tensor:
        r = self.config.coarse_resolution
        return self.coarse_net(uniform_noise(z)).view(z.shape[0], self.config.channels, r, r)

    def residual(self, level: int, upsampled: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The residual of level ``level`` (0 = the first above the coarse one); ``noise`` ~ N(0, 1)."""
        return self.levels[level](torch.cat([upsampled, uniform_noise(noise)], dim=1))

    def split_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``z`` -> the coarse code and one noise plane (N, 1, r, r) per level."""
        sizes = [self.config.coarse_z_dim] + [r * r for r in self.config.level_resolutions]
        parts = torch.split(z, sizes, dim=1)
        planes = [p.reshape(z.shape[0], 1, r, r) for p, r in zip(parts[1:], self.config.level_resolutions)]
        return parts[0], planes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            raise ValueError("LAPGANGenerator is unconditional; labels must be None")
        code, planes = self.split_latent(z)
        image = self.coarse(code)
        for level, noise in enumerate(planes):
            upsampled = up(image)
            image = upsampled + self.residual(level, upsampled, noise)
        return image if self.training else image.clamp(-1, 1)


@register
class LAPGANDiscriminator(Pretrained, nn.Module):
    """One discriminator per level: ``coarse(images)`` and ``level(k, images, condition)``, each
    ``-> (logits (N,), None)`` so a partial application is a critic for ``lesion_metrics.losses``."""

    config_class = LAPGANConfig
    num_classes = 0

    def __init__(self, config: LAPGANConfig):
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        c, h = config, config.coarse_d_hidden
        self.coarse_net = nn.Sequential(
            nn.Flatten(), nn.Linear(c.channels * c.coarse_resolution**2, h), nn.ReLU(True), nn.Dropout(c.dropout),
            nn.Linear(h, h), nn.ReLU(True), nn.Dropout(c.dropout), nn.Linear(h, 1),
        )
        _init_linear(self.coarse_net, 0.005)
        self.levels = nn.ModuleList(_level_discriminator(c, r) for r in c.level_resolutions)

    def coarse(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.coarse_net(images).flatten(), None

    def level(self, level: int, images: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, None]:
        """``images`` = upsampled coarse + residual, ``condition`` = the upsampled coarse image."""
        return self.levels[level](torch.cat([images, condition], dim=1)).flatten(), None
