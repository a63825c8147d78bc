"""SPADE (Park et al. 2019): spatially-adaptive normalisation generator, without the optional VAE
style encoder (SPADE's default, ``use_vae`` off), so the output is a function of the label map.

Generator ("normal" upsampling): the label map resized to res/32 -> 3x3 conv to 16nf ->
SPADE ResBlk(16nf) -> up -> ResBlk(16nf) -> ResBlk(16nf) -> [up -> ResBlk] to 8nf, 4nf, 2nf, nf ->
LeakyReLU -> 3x3 conv -> tanh. Residual-block convs carry spectral norm; SPADE's parameter-free
norm is batch norm (SPADE uses SyncBatchNorm; the trainer converts it under DDP) and its modulation
MLP has 128 hidden channels. The discriminator is
:class:`~lesion_models.pix2pixhd.MultiscaleDiscriminator` built by :func:`spade_discriminator_config`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from lesion_models.hub import Pretrained, register
from lesion_models.pix2pixhd import DiscriminatorConfig, check_divisible, init_weights
from lesion_models.spectral import spectral_norm


@dataclasses.dataclass
class SPADEGeneratorConfig:
    label_nc: int = 4
    boundary: bool = True
    output_nc: int = 3
    nf: int = 64
    hidden: int = 128  # SPADE's modulation MLP width
    num_upsampling: int = 5  # SPADE's "normal"; the label map enters at res / 2**num_upsampling


class SPADE(nn.Module):
    def __init__(self, channels: int, label_nc: int, hidden: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x, segmap):
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        h = self.shared(segmap)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int):
        super().__init__()
        middle = min(fin, fout)
        self.norm_0, self.conv_0 = SPADE(fin, label_nc, hidden), spectral_norm(nn.Conv2d(fin, middle, 3, padding=1))
        self.norm_1, self.conv_1 = SPADE(middle, label_nc, hidden), spectral_norm(nn.Conv2d(middle, fout, 3, padding=1))
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden)
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))

    def forward(self, x, seg):
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


@register
class SPADEGenerator(nn.Module, Pretrained):
    config_class = SPADEGeneratorConfig

    def __init__(self, config: SPADEGeneratorConfig):
        super().__init__()
        self.config = c = config
        if not 5 <= c.num_upsampling <= 7:
            raise ValueError(f"SPADEGenerator: num_upsampling {c.num_upsampling} not in 5..7 (normal, more, most)")
        label_nc, nf = c.label_nc + int(c.boundary), c.nf
        self.fc = nn.Conv2d(label_nc, 16 * nf, 3, padding=1)
        self.head = SPADEResBlock(16 * nf, 16 * nf, label_nc, c.hidden)
        # "more"/"most" (num_upsampling 6/7) add an up before middle_1 and an extra nf/2 block.
        self.middle = nn.ModuleList(SPADEResBlock(16 * nf, 16 * nf, label_nc, c.hidden) for _ in range(2))
        widths = [16 * nf, 8 * nf, 4 * nf, 2 * nf, nf] + ([nf // 2] if c.num_upsampling >= 7 else [])
        self.ups = nn.ModuleList(SPADEResBlock(a, b, label_nc, c.hidden) for a, b in zip(widths, widths[1:]))
        self.to_rgb = nn.Conv2d(widths[-1], c.output_nc, 3, padding=1)
        init_weights(self, "xavier")  # SPADE's init_type xavier, init_variance 0.02

    @property
    def stride(self) -> int:
        return 2**self.config.num_upsampling

    @property
    def stochastic(self) -> bool:
        return False

    def forward(self, label_input: torch.Tensor, image: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``image``/``generator`` unused (no VAE): same interface as the other generators."""
        check_divisible(label_input, self.stride, type(self).__name__)
        h, w = label_input.shape[2:]
        seg = label_input
        x = self.fc(F.interpolate(seg, size=(h // self.stride, w // self.stride), mode="nearest"))
        x = self.head(x, seg)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.middle[0](x, seg)
        if self.config.num_upsampling >= 6:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.middle[1](x, seg)
        for block in self.ups:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


def spade_discriminator_config(input_nc: int, ndf: int = 64) -> DiscriminatorConfig:
    """SPADE's discriminator: 2 scales, spectral instance norm, no bias in the normalised convs
    (SPADE removes it), xavier init like SPADE's generator. SPADE counts n_layers_D = 4 for the same
    five convs that pix2pixHD calls n_layers = 3 (it counts the stride-1 conv)."""
    return DiscriminatorConfig(input_nc=input_nc, ndf=ndf, n_layers=3, num_D=2, norm="instance", spectral=True,
                               conv_bias=False, init="xavier", zero_bias=True)
