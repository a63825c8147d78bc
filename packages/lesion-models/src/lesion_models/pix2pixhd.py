"""pix2pixHD (Wang et al. 2018) for lesion label maps, with the dermoscopy paper's fusion variant.

- :class:`Pix2PixHDGenerator`: the global generator (7x7 front, ``n_downsampling`` stride-2
  convs, ``n_blocks`` residual blocks, mirrored transposed convs, instance norm, reflect padding;
  ``upsample="resize"`` replaces the transposed convs by resize-convs, a deviation, see up_block),
  optionally wrapped by ``n_local_enhancers`` local enhancers (each doubles the resolution with a
  ``ngf/2**k`` wide front end and ``n_blocks_local`` residual blocks, summed with the coarser
  generator's last features, as in pix2pixHD).
  ``fusion=True`` is "ours": at every decoder scale the encoder feature of the same scale is
  concatenated to the upsampled decoder feature and fused by a 3x3 conv + norm + ReLU, so the
  shallow layout information is not lost through the bottleneck. The paper does not publish its
  exact fusion layer; this concat-and-conv block is our reading of it.
- ``feat_num > 0`` adds pix2pixHD's instance-wise feature encoder: an encoder-decoder maps the real
  image to ``feat_num`` channels, averaged over each label region (skin, lesion) of each image, and
  concatenated to the label input. At synthesis, region features are drawn from ``feature_bank``
  (a fixed-size ring buffer of encoded training features per label, filled by the trainer); this
  replaces pix2pixHD's offline k-means cluster centres so that a saved model is self-contained.
- :class:`MultiscaleDiscriminator`: ``num_D`` PatchGANs on the input average-pooled 0..num_D-1
  times, returning every intermediate feature for the feature-matching loss. The same class,
  configured differently, is pix2pix's 70x70 PatchGAN and SPADE's discriminator.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from lesion_models.hub import Pretrained, register
from lesion_models.spectral import spectral_norm


def check_divisible(x: torch.Tensor, stride: int, model: str) -> None:
    """A clear error instead of a shape mismatch deep inside a skip connection."""
    h, w = x.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f"{model}: input size {h}x{w} is not a multiple of {stride}; pad or resize the masks")


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (instance, batch, none)")


def init_weights(module: nn.Module, kind: str = "normal", gain: float = 0.02, zero_bias: bool = True) -> None:
    """pix2pixHD/pix2pix/SPADE init: conv weights N(0, gain) (``normal``) or xavier normal with
    ``gain`` (``xavier``, SPADE), the unnormalised weight of spectrally normalised convs included;
    norm scales N(1, gain), norm shifts 0. pix2pix and SPADE zero the conv biases; pix2pixHD's
    ``weights_init`` leaves them at PyTorch's default (uniform within 1/sqrt(fan_in)):
    ``zero_bias=False``."""
    if kind not in ("normal", "xavier"):
        raise ValueError(f"unknown init {kind!r} (normal, xavier)")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            if kind == "normal":
                nn.init.normal_(weight, 0.0, gain)
            else:
                nn.init.xavier_normal_(weight, gain=gain)
            if m.bias is not None and zero_bias:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def conv_block(cin: int, cout: int, kernel: int, norm: str, stride: int = 1) -> list[nn.Module]:
    """Reflect-padded conv + norm + ReLU."""
    pad = kernel // 2
    return [nn.ReflectionPad2d(pad), nn.Conv2d(cin, cout, kernel, stride), norm_layer(norm, cout), nn.ReLU(True)]


def down_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    # pix2pixHD uses zero padding for the stride-2 convs.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), norm_layer(norm, cout), nn.ReLU(True))


UPSAMPLE_MODES = ("transpose", "resize")


def up_block(cin: int, cout: int, norm: str, mode: str = "transpose") -> nn.Sequential:
    """pix2pixHD's stride-2 3x3 transposed conv, or (``resize``) nearest-neighbour 2x upsampling and
    a reflect-padded 3x3 conv (Odena et al. 2016). The transposed conv's kernel overlaps unevenly
    (even output pixels get one tap per axis, odd ones two), which paints a period-2 colour
    checkerboard over flat regions; resize-conv treats every output pixel alike."""
    if mode == "transpose":
        up = [nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1)]
    elif mode == "resize":
        up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
    else:
        raise ValueError(f"unknown upsample {mode!r} ({', '.join(UPSAMPLE_MODES)})")
    return nn.Sequential(*up, norm_layer(norm, cout), nn.ReLU(True))


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            *conv_block(channels, channels, 3, norm),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm_layer(norm, channels),
        )

    def forward(self, x):
        return x + self.body(x)


class GlobalGenerator(nn.Module):
    """pix2pixHD's global generator up to (not including) its output layer.

    Returns the last ``ngf``-channel feature map; the owner adds the 7x7 output conv or, inside a
    local enhancer, sums it with the finer branch."""

    def __init__(self, input_nc: int, ngf: int, n_downsampling: int, n_blocks: int, norm: str, fusion: bool,
                 upsample: str = "transpose"):
        super().__init__()
        self.fusion = fusion
        self.front = nn.Sequential(*conv_block(input_nc, ngf, 7, norm))
        widths = [ngf * 2**i for i in range(n_downsampling + 1)]
        self.down = nn.ModuleList(down_block(widths[i], widths[i + 1], norm) for i in range(n_downsampling))
        self.blocks = nn.Sequential(*(ResnetBlock(widths[-1], norm) for _ in range(n_blocks)))
        self.up = nn.ModuleList(
            up_block(widths[i + 1], widths[i], norm, upsample) for i in reversed(range(n_downsampling))
        )
        if fusion:
            self.fuse = nn.ModuleList(
                nn.Sequential(*conv_block(2 * widths[i], widths[i], 3, norm)) for i in reversed(range(n_downsampling))
            )

    def forward(self, x):
        x = self.front(x)
        skips = [x]
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.blocks(x)
        for index, layer in enumerate(self.up):
            x = layer(x)
            if self.fusion:
                x = self.fuse[index](torch.cat([x, skips[-2 - index]], 1))
        return x


class LocalEnhancer(nn.Module):
    """One pix2pixHD local enhancer level: front end at 2x resolution + residual blocks + upsampling."""

    def __init__(self, input_nc: int, ngf: int, n_blocks: int, norm: str, upsample: str = "transpose"):
        super().__init__()
        self.down = nn.Sequential(*conv_block(input_nc, ngf, 7, norm), down_block(ngf, 2 * ngf, norm))
        self.up = nn.Sequential(*(ResnetBlock(2 * ngf, norm) for _ in range(n_blocks)),
                                up_block(2 * ngf, ngf, norm, upsample))

    def forward(self, x, coarse_features):
        return self.up(self.down(x) + coarse_features)


class FeatureEncoder(nn.Module):
    """pix2pixHD's instance-wise feature encoder (image -> region-averaged ``feat_num`` channels)."""

    def __init__(self, feat_num: int, ngf: int, n_downsampling: int, norm: str):
        super().__init__()
        widths = [ngf * 2**i for i in range(n_downsampling + 1)]
        layers = conv_block(3, ngf, 7, norm)
        layers += [down_block(widths[i], widths[i + 1], norm) for i in range(n_downsampling)]
        layers += [up_block(widths[i + 1], widths[i], norm) for i in reversed(range(n_downsampling))]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, feat_num, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, image, onehot):
        return region_average(self.net(image), onehot)


def region_average(features: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Replace every pixel's feature by the mean over its label region in its image (vectorised)."""
    means = region_means(features, onehot)  # (B, L, F)
    return torch.einsum("blf,blhw->bfhw", means, onehot)


def region_means(features: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    area = onehot.sum((2, 3)).clamp_min(1.0)  # (B, L)
    return torch.einsum("bfhw,blhw->blf", features, onehot) / area[..., None]


@dataclasses.dataclass
class Pix2PixHDConfig:
    label_nc: int = 4  # skin + 3 lesion classes (ISIC-2017); one-hot channels come first
    boundary: bool = True  # one extra input channel: the lesion boundary (instance edge) map
    output_nc: int = 3
    ngf: int = 64  # width of the global generator
    n_downsampling: int = 4
    n_blocks: int = 9
    norm: str = "instance"
    fusion: bool = False  # True = "ours" (encoder/decoder fusion at every scale)
    n_local_enhancers: int = 0
    n_blocks_local: int = 3
    feat_num: int = 0  # pix2pixHD instance feature encoder: 3 when enabled
    feat_ngf: int = 16
    feature_bank_size: int = 64
    # "transpose" is pix2pixHD's; "resize" (nearest + 3x3 conv) is a deviation that removes the
    # transposed convolutions' checkerboard (up_block). The feature encoder keeps pix2pixHD's
    # transposed convs: its output is averaged over each region, so no pattern survives.
    upsample: str = "transpose"

    def __post_init__(self):
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"Pix2PixHDConfig.upsample {self.upsample!r} is not one of {UPSAMPLE_MODES}")


@register
class Pix2PixHDGenerator(nn.Module, Pretrained):
    config_class = Pix2PixHDConfig

    def __init__(self, config: Pix2PixHDConfig):
        super().__init__()
        self.config = c = config
        input_nc = c.label_nc + int(c.boundary) + c.feat_num
        self.global_net = GlobalGenerator(
            input_nc, c.ngf, c.n_downsampling, c.n_blocks, c.norm, c.fusion, c.upsample
        )
        # Level k (k = 1..n) runs at 2**k times the global resolution, with ngf / 2**k channels.
        self.local_nets = nn.ModuleList(
            LocalEnhancer(input_nc, c.ngf // 2**k, c.n_blocks_local, c.norm, c.upsample)
            for k in range(1, c.n_local_enhancers + 1)
        )
        width = c.ngf // 2**c.n_local_enhancers
        self.to_rgb = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, c.output_nc, 7), nn.Tanh())
        if c.feat_num:
            self.encoder = FeatureEncoder(c.feat_num, c.feat_ngf, 4, c.norm)
            self.register_buffer("feature_bank", torch.zeros(c.label_nc, c.feature_bank_size, c.feat_num))
            self.register_buffer("bank_count", torch.zeros(c.label_nc, dtype=torch.long))
        init_weights(self, zero_bias=False)

    @property
    def stride(self) -> int:
        return 2 ** (self.config.n_downsampling + self.config.n_local_enhancers)

    @property
    def stochastic(self) -> bool:
        return self.config.feat_num > 0

    def forward(self, label_input: torch.Tensor, image: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``label_input``: one-hot label map (+ boundary), (B, label_nc [+1], H, W).

        With a feature encoder, region features come from ``image`` when given (training) and
        from the feature bank otherwise (synthesis; ``generator`` picks the entries)."""
        check_divisible(label_input, self.stride, type(self).__name__)
        if self.config.feat_num:
            onehot = label_input[:, : self.config.label_nc]
            feats = self.encoder(image, onehot) if image is not None else self.sample_features(onehot, generator)
            label_input = torch.cat([label_input, feats], 1)
        pyramid = [label_input]
        for _ in self.local_nets:
            pyramid.append(F.avg_pool2d(pyramid[-1], 3, 2, 1, count_include_pad=False))
        x = self.global_net(pyramid[-1])
        for level, net in enumerate(self.local_nets):
            x = net(pyramid[-2 - level], x)
        return self.to_rgb(x)

    @torch.no_grad()
    def update_feature_bank(self, image: torch.Tensor, onehot: torch.Tensor) -> None:
        """Store the encoded region features of real images (ring buffer per label)."""
        means = region_means(self.encoder.net(image), onehot)  # (B, L, F)
        present = onehot.sum((2, 3)) > 0
        size = self.config.feature_bank_size
        for label in range(self.config.label_nc):
            rows = means[present[:, label], label]
            for row in rows[-size:]:
                self.feature_bank[label, int(self.bank_count[label]) % size] = row
                self.bank_count[label] += 1

    def sample_features(self, onehot: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw, per image and label region, one stored training feature (zeros if none stored)."""
        b, labels = onehot.shape[:2]
        filled = self.bank_count.clamp(max=self.config.feature_bank_size).clamp_min(1)
        u = torch.rand(b, labels, generator=generator, device="cpu").to(onehot.device)
        pick = (u * filled).long().clamp(max=self.config.feature_bank_size - 1)  # (B, L)
        means = self.feature_bank[torch.arange(labels, device=onehot.device), pick]  # (B, L, F)
        return torch.einsum("blf,blhw->bfhw", means.to(onehot.dtype), onehot)


# ---------------------------------------------------------------------------------------------
# Discriminator


@dataclasses.dataclass
class DiscriminatorConfig:
    input_nc: int = 8  # label_nc (+ boundary) + 3 image channels
    ndf: int = 64
    n_layers: int = 3
    num_D: int = 2
    norm: str = "instance"
    spectral: bool = False  # SPADE: spectral norm on the normalised middle convs
    padding: int = 2  # pix2pixHD/SPADE pad 4x4 convs by 2, pix2pix by 1 (exactly 70x70 receptive field)
    max_width: int = 512  # pix2pixHD/SPADE cap every width at 512, pix2pix at 8 * ndf
    zero_bias: bool = False  # pix2pix and SPADE zero the conv biases at init; pix2pixHD keeps PyTorch's
    conv_bias: bool = True  # bias in the normalised convs: pix2pixHD keeps it, pix2pix (batch) and SPADE drop it
    init: str = "normal"  # conv weights N(0, 0.02) (pix2pixHD, pix2pix) or "xavier" normal, gain 0.02 (SPADE)


class PatchDiscriminator(nn.Module):
    """One PatchGAN: conv s2 + LReLU, (n_layers - 1) x [conv s2 + norm + LReLU], conv s1 + norm +
    LReLU, conv s1 -> 1 channel. Returns every block's output (last = the patch logits)."""

    def __init__(self, c: DiscriminatorConfig):
        super().__init__()
        widths = [min(c.ndf * 2**i, c.max_width) for i in range(c.n_layers + 1)]
        blocks = [nn.Sequential(nn.Conv2d(c.input_nc, widths[0], 4, 2, c.padding), nn.LeakyReLU(0.2, True))]
        for i in range(1, c.n_layers + 1):
            stride = 2 if i < c.n_layers else 1
            conv = nn.Conv2d(widths[i - 1], widths[i], 4, stride, c.padding, bias=c.conv_bias)
            if c.spectral:
                conv = spectral_norm(conv)
            blocks.append(nn.Sequential(conv, norm_layer(c.norm, widths[i]), nn.LeakyReLU(0.2, True)))
        blocks.append(nn.Sequential(nn.Conv2d(widths[-1], 1, 4, 1, c.padding)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


@register
class MultiscaleDiscriminator(nn.Module, Pretrained):
    config_class = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.scales = nn.ModuleList(PatchDiscriminator(config) for _ in range(config.num_D))
        init_weights(self, config.init, zero_bias=config.zero_bias)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale (finest first), the list of intermediate features ending with the logits."""
        outputs = []
        for index, net in enumerate(self.scales):
            if index:
                x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            outputs.append(net(x))
        return outputs

