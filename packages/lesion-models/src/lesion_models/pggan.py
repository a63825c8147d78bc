"""Progressive growing GAN (Karras et al. 2018), after tkarras/progressive_growing_of_gans.

Faithful to the official networks: equalized learning rate (weights ~ N(0, 1), the He constant
``gain / sqrt(fan_in)`` applied at run time), pixel-wise feature normalisation after every
generator convolution and on the latent, minibatch standard deviation (group size 4) before the
discriminator's last block, per-resolution toRGB/fromRGB blended by ``alpha`` during a fade-in,
leaky ReLU 0.2, ``nf(stage) = min(fmap_base / 2**stage, fmap_max)`` channels, latent 512, linear
outputs, and the official ``fused_scale=True`` (D's resampling block applies bias and activation
after the downscale). Resampling convolutions from 32 px (G) and 16 px (D) up run as one stride-2
convolution (transposed in G) with the 3x3 kernel spread over 4x4, as the official code does, so a
3x3 convolution at the higher resolution costs 4/9 of its multiply-adds. Conditioning as in the
official code: the one-hot label is concatenated to the latent (and pixel-normalised with it) in
G, and D has ``num_classes`` extra outputs (AC-GAN).

Both networks are built for ``config.resolution`` from the start (as the official code builds the
full graph); ``set_stage(resolution, alpha)`` selects the current output resolution and fade, and
that stage is stored in buffers, so it survives ``save_pretrained``/``from_pretrained``.

Deviations from the official networks: none in the layers. The generator clamps its output to
[-1, 1] in eval mode only (the sampling protocol promises that range; training sees the raw linear
output, as in the official code).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lesion_models.hub import Pretrained, register

__all__ = [
    "PGGANConfig",
    "PGGANGenerator",
    "PGGANDiscriminator",
    "EqualizedConv2d",
    "EqualizedLinear",
    "pixel_norm",
    "minibatch_stddev",
]


@dataclasses.dataclass
class PGGANConfig:
    """Shared by G and D (the official code also configures both from one place)."""

    resolution: int = 256  # final resolution, a power of two in 4..1024
    channels: int = 3
    num_classes: int = 0  # 0 = unconditional
    fmap_base: int = 8192
    fmap_max: int = 512
    z_dim: int = 0  # 0 = the official default min(fmap_base, fmap_max)
    mbstd_group_size: int = 4
    lrelu_slope: float = 0.2
    pixelnorm_epsilon: float = 1e-8
    # The official default (networks.py): D's resampling block is act(bias(downscale(conv(x)))),
    # computed as one stride-2 convolution; fused_scale=False is the official alternative
    # downscale(act(bias(conv(x)))). G's fused and separate upscale + conv are the same function.
    fused_scale: bool = True

    def __post_init__(self):
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if log2 != int(log2) or not 2 <= log2 <= 10:
            raise ValueError(f"PGGANConfig.resolution must be a power of two in 4..1024, got {self.resolution}")
        if self.z_dim == 0:
            self.z_dim = min(self.fmap_base, self.fmap_max)

    @property
    def resolution_log2(self) -> int:
        return int(math.log2(self.resolution))

    def nf(self, stage: int) -> int:
        """Feature maps of stage ``stage`` (4x4 is stage 1 in G), the official channel rule."""
        return min(int(self.fmap_base / 2.0**stage), self.fmap_max)


# ---------------------------------------------------------------------------------------------
# Layers.


# Smallest resolutions at which the stride-2 form of a resampling convolution is used. Below them
# the separate layers compute the same function faster: oneDNN's stride-2 kernels are slow on 4-8 px
# maps (512 channels, batch 16: 0.3-1.0x the separate layers below these sizes, 1.2-3x from them up).
FUSED_UPSCALE_FROM = 32
FUSED_DOWNSCALE_FROM = 16


class EqualizedLinear(nn.Module):
    """Dense layer with weights ~ N(0, 1) scaled at run time by ``gain / sqrt(fan_in)``."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualizedConv2d(nn.Module):
    """Same-padded convolution with the equalized-learning-rate run-time scale."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def _spread_kernel(self, weight: torch.Tensor) -> torch.Tensor:
        """The 3x3 kernel spread over 4x4 as the sum of its four one-pixel shifts: the kernel of a
        3x3 convolution fused with a 2x nearest upscale before it or a 2x2 box downscale after it."""
        w = F.pad(weight * self.scale, (1, 1, 1, 1))
        return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]

    def upscale_conv(self, x: torch.Tensor) -> torch.Tensor:
        """``self(upscale2d(x))``; for outputs of at least ``FUSED_UPSCALE_FROM`` px as one stride-2
        transposed convolution (the official ``upscale2d_conv2d``): 4 instead of 9 multiply-adds per
        output pixel and channel pair."""
        if 2 * x.shape[-1] < FUSED_UPSCALE_FROM:
            return self(_upscale2d(x))
        kernel = self._spread_kernel(self.weight.flip(2, 3)).transpose(0, 1)
        return F.conv_transpose2d(x, kernel, self.bias, stride=2, padding=1)

    def conv_downscale(self, x: torch.Tensor) -> torch.Tensor:
        """``downscale2d(self(x))`` (the bias commutes with the box filter); for inputs of at least
        ``FUSED_DOWNSCALE_FROM`` px as one stride-2 convolution (the official ``conv2d_downscale2d``)."""
        if x.shape[-1] < FUSED_DOWNSCALE_FROM:
            conv = F.conv2d(x, self.weight * self.scale, None, padding=self.padding)
            return _downscale2d(conv) + self.bias.to(conv.dtype).view(1, -1, 1, 1)  # autocast: as F.conv2d
        return F.conv2d(x, self._spread_kernel(self.weight) * 0.25, self.bias, stride=2, padding=1)


def pixel_norm(x: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Normalise each pixel's feature vector to unit RMS over channels (dim 1)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + epsilon)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one feature map: the stddev over a group, averaged over features and pixels.

    As in the official code, group g holds samples g, g + N/G, g + 2N/G, ... (a reshape to
    [G, N/G, ...]); the batch must be divisible by min(group_size, N).
    """
    n, c, h, w = x.shape
    group = min(group_size, n)
    if n % group:
        raise ValueError(f"minibatch_stddev: batch {n} is not divisible by the group size {group}")
    y = x.float().reshape(group, -1, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = torch.sqrt(y + 1e-8).mean(dim=(1, 2, 3))  # (N/G,)
    y = y.reshape(1, -1, 1, 1, 1).expand(group, -1, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


def _upscale2d(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _downscale2d(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


class _StageMixin:
    """Current output resolution and fade alpha kept in buffers so they are saved with weights.

    ``forward`` reads the stage as ``(log2, fading)`` and the fade weight from the ``stage_alpha``
    buffer, never alpha as a Python number: under ``torch.compile`` a number read in ``forward`` is a
    constant of the compiled graph, and alpha changes at every step of a fade."""

    def _init_stage(self, config: PGGANConfig) -> None:
        self.register_buffer("stage_log2", torch.tensor(config.resolution_log2, dtype=torch.int64))
        self.register_buffer("stage_alpha", torch.tensor(1.0))
        self._set_cached_stage(config.resolution_log2, 1.0)
        # safetensors' load_model goes through load_state_dict; refresh the cached Python copy.
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_stage())

    def _set_cached_stage(self, log2: int, alpha: float) -> None:
        self._stage, self._alpha = (log2, alpha < 1.0), alpha

    def _refresh_stage(self) -> None:
        if self.stage_log2.is_meta:  # shapes only (lesion_train.plan): no stage to read; set_stage sets it
            return
        self._set_cached_stage(int(self.stage_log2.item()), float(self.stage_alpha.item()))

    def set_stage(self, resolution: int, alpha: float = 1.0) -> None:
        """Output ``resolution``; ``alpha`` < 1 blends in the previous resolution's path."""
        log2 = math.log2(resolution)
        if log2 != int(log2) or not 2 <= log2 <= self.config.resolution_log2:
            raise ValueError(f"stage resolution {resolution} is not a power of two in 4..{self.config.resolution}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"fade alpha must be in [0, 1], got {alpha}")
        alpha = 1.0 if log2 == 2 else float(alpha)  # 4x4 has nothing to fade from
        self.stage_log2.fill_(int(log2))
        self.stage_alpha.fill_(alpha)
        self._set_cached_stage(int(log2), alpha)

    def _fade(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """``lerp(low, high, alpha)``; alpha (float32) is cast to the activations' dtype under AMP."""
        return torch.lerp(low, high, self.stage_alpha.to(high.dtype))

    @property
    def resolution(self) -> int:
        return 2 ** self._stage[0]

    @property
    def alpha(self) -> float:
        return self._alpha


# ---------------------------------------------------------------------------------------------
# Networks.


@register
class PGGANGenerator(_StageMixin, Pretrained, nn.Module):
    config_class = PGGANConfig

    def __init__(self, config: PGGANConfig):
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.num_classes = config.num_classes
        act = config.lrelu_slope
        eps = config.pixelnorm_epsilon
        nf = config.nf
        self._act, self._eps = act, eps
        # 4x4: dense latent -> 4x4 maps (gain sqrt(2)/4 as in the official code), then a 3x3 conv.
        self.dense = EqualizedLinear(config.z_dim + config.num_classes, nf(1) * 16, gain=math.sqrt(2) / 4)
        self.conv4 = EqualizedConv2d(nf(1), nf(1), 3)
        blocks, to_rgb = [], [EqualizedConv2d(nf(1), config.channels, 1, gain=1.0)]
        for log2 in range(3, config.resolution_log2 + 1):
            blocks.append(
                nn.ModuleList([EqualizedConv2d(nf(log2 - 2), nf(log2 - 1), 3), EqualizedConv2d(nf(log2 - 1), nf(log2 - 1), 3)])
            )
            to_rgb.append(EqualizedConv2d(nf(log2 - 1), config.channels, 1, gain=1.0))
        self.blocks = nn.ModuleList(blocks)  # blocks[i] makes 2**(i+3) px
        self.to_rgb = nn.ModuleList(to_rgb)  # to_rgb[i] reads 2**(i+2) px features
        self._init_stage(config)

    def _act_norm(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(F.leaky_relu(x, self._act), self._eps)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (N, z_dim) and, when conditional, class indices (N,) -> images (N, C, R, R)."""
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (class indices)")
            z = torch.cat([z, F.one_hot(labels.long(), self.num_classes).to(z.dtype)], dim=1)
        x = pixel_norm(z, self._eps)
        x = self.dense(x).reshape(z.shape[0], -1, 4, 4)
        x = self._act_norm(x)
        x = self._act_norm(self.conv4(x))
        log2, fading = self._stage
        previous = None
        for index in range(log2 - 2):
            if index == log2 - 3 and fading:
                previous = x
            conv0, conv1 = self.blocks[index]
            x = self._act_norm(conv0.upscale_conv(x))
            x = self._act_norm(conv1(x))
        images = self.to_rgb[log2 - 2](x)
        if previous is not None:
            # Fade-in: the new block's RGB blended with the upscaled RGB of the previous stage.
            images = self._fade(_upscale2d(self.to_rgb[log2 - 3](previous)), images)
        if not self.training:
            images = images.clamp(-1, 1)
        return images


@register
class PGGANDiscriminator(_StageMixin, Pretrained, nn.Module):
    """Returns ``(scores (N,), class_logits (N, num_classes) or None)``."""

    config_class = PGGANConfig

    def __init__(self, config: PGGANConfig):
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        nf = config.nf
        self._act = config.lrelu_slope
        from_rgb, blocks = [EqualizedConv2d(config.channels, nf(1), 1)], []
        for log2 in range(3, config.resolution_log2 + 1):
            from_rgb.append(EqualizedConv2d(config.channels, nf(log2 - 1), 1))
            blocks.append(nn.ModuleList([EqualizedConv2d(nf(log2 - 1), nf(log2 - 1), 3), EqualizedConv2d(nf(log2 - 1), nf(log2 - 2), 3)]))
        self.from_rgb = nn.ModuleList(from_rgb)  # from_rgb[i] reads 2**(i+2) px images
        self.blocks = nn.ModuleList(blocks)  # blocks[i] maps 2**(i+3) px -> 2**(i+2) px
        extra = 1 if config.mbstd_group_size > 1 else 0
        self.conv4 = EqualizedConv2d(nf(1) + extra, nf(1), 3)
        self.dense0 = EqualizedLinear(nf(1) * 16, nf(0))
        self.dense1 = EqualizedLinear(nf(0), 1 + config.num_classes, gain=1.0)
        self._init_stage(config)

    def _lrelu(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self._act)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        log2, fading = self._stage
        if images.shape[-1] != 2**log2:
            raise ValueError(f"discriminator is at {2**log2} px but got {images.shape[-1]} px images")
        x = self._lrelu(self.from_rgb[log2 - 2](images))
        for index in range(log2 - 3, -1, -1):
            conv0, conv1 = self.blocks[index]
            x = self._lrelu(conv0(x))
            if self.config.fused_scale:
                x = self._lrelu(conv1.conv_downscale(x))
            else:
                x = _downscale2d(self._lrelu(conv1(x)))
            if index == log2 - 3 and fading:
                # Fade-in: blend with the previous stage's fromRGB of the downscaled image.
                x = self._fade(self._lrelu(self.from_rgb[log2 - 3](_downscale2d(images))), x)
        if self.config.mbstd_group_size > 1:
            x = minibatch_stddev(x, self.config.mbstd_group_size)
        x = self._lrelu(self.conv4(x))
        x = self._lrelu(self.dense0(x.flatten(1)))
        out = self.dense1(x)
        scores = out[:, 0]
        return scores, (out[:, 1:] if self.num_classes else None)
