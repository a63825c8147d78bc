"""pix2pix (Isola et al. 2017): U-Net generator; its 70x70 PatchGAN is a one-scale
:class:`~lesion_models.pix2pixhd.MultiscaleDiscriminator` built by :func:`patchgan70_config`.

The U-Net has ``num_downs`` stride-2 4x4 conv levels (8 for 256 px, so the bottleneck is 1x1; the
trainer passes log2(resolution) as pix2pix's unet_256 does for 256 px), widths ngf, 2ngf, 4ngf, 8ngf, 8ngf..., batch norm, LeakyReLU 0.2 down, ReLU up,
dropout 0.5 in the three innermost 8ngf decoder levels (pix2pix's only source of noise).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lesion_models.hub import Pretrained, register
from lesion_models.pix2pixhd import DiscriminatorConfig, check_divisible, init_weights, norm_layer


@dataclasses.dataclass
class UNetGeneratorConfig:
    label_nc: int = 4
    boundary: bool = True
    output_nc: int = 3
    ngf: int = 64
    num_downs: int = 8  # 8 = pix2pix's unet_256
    norm: str = "batch"
    dropout: float = 0.5


class UNetLevel(nn.Module):
    """One U-Net level: down conv, the inner levels, up conv, concatenated with the input skip."""

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None, c: UNetGeneratorConfig,
                 input_nc: int | None = None, outermost: bool = False, dropout: float = 0.0):
        super().__init__()
        self.outermost = outermost
        use_bias = c.norm != "batch"  # pix2pix: no conv bias in front of batch norm
        down = [nn.Conv2d(input_nc or outer, inner, 4, 2, 1, bias=use_bias)]
        if not outermost:
            down = [nn.LeakyReLU(0.2, True), *down]
            if submodule is not None:
                down.append(norm_layer(c.norm, inner))
        up_in = inner if submodule is None else 2 * inner
        if outermost:
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, c.output_nc, 4, 2, 1), nn.Tanh()]
        else:
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=use_bias), norm_layer(c.norm, outer)]
            if dropout:
                up.append(nn.Dropout(dropout))
        self.down = nn.Sequential(*down)
        self.inner = submodule if submodule is not None else nn.Identity()
        self.up = nn.Sequential(*up)

    def forward(self, x):
        y = self.up(self.inner(self.down(x)))
        return y if self.outermost else torch.cat([x, y], 1)


@register
class UNetGenerator(nn.Module, Pretrained):
    config_class = UNetGeneratorConfig

    def __init__(self, config: UNetGeneratorConfig):
        super().__init__()
        self.config = c = config
        if c.num_downs < 5:
            raise ValueError(f"UNetGenerator: num_downs {c.num_downs} < 5 (the four outer levels + bottleneck)")
        wide = 8 * c.ngf
        level = UNetLevel(wide, wide, None, c)  # innermost
        for _ in range(c.num_downs - 5):
            level = UNetLevel(wide, wide, level, c, dropout=c.dropout)
        for mult in (4, 2, 1):
            level = UNetLevel(mult * c.ngf, 2 * mult * c.ngf, level, c)
        self.net = UNetLevel(c.output_nc, c.ngf, level, c, input_nc=c.label_nc + int(c.boundary), outermost=True)
        init_weights(self)

    @property
    def stride(self) -> int:
        return 2**self.config.num_downs

    @property
    def stochastic(self) -> bool:
        return self.config.dropout > 0 and self.config.num_downs > 5

    def forward(self, label_input: torch.Tensor, image: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``image`` and ``generator`` are accepted for a uniform generator interface; pix2pix's
        noise is dropout, which :meth:`enable_dropout` keeps on at synthesis."""
        check_divisible(label_input, self.stride, type(self).__name__)
        return self.net(label_input)

    def enable_dropout(self) -> None:
        """Dropout on at test time (as pix2pix tests), batch norm left in eval mode."""
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.train()


def patchgan70_config(input_nc: int, ndf: int = 64) -> DiscriminatorConfig:
    """pix2pix's 70x70 PatchGAN: one scale, n_layers 3, batch norm, padding 1, widths up to 8 * ndf,
    no bias in the convs in front of batch norm."""
    return DiscriminatorConfig(input_nc=input_nc, ndf=ndf, n_layers=3, num_D=1, norm="batch", padding=1,
                               max_width=8 * ndf, conv_bias=False, zero_bias=True)
