"""Losses of mask-to-image translation (pix2pixHD, pix2pix, SPADE).

A discriminator output is what ``MultiscaleDiscriminator`` returns: per scale, the list of
intermediate features ending with the patch logits (a bare tensor counts as one scale with no
features).

- :func:`gan_loss`: ``lsgan`` (pix2pixHD: MSE to 1/0), ``vanilla`` (pix2pix: BCE with logits),
  ``hinge`` (SPADE: D ``relu(1 - real) + relu(1 + fake)``, G ``-fake``). pix2pixHD *sums* the
  per-scale losses, SPADE *averages* them: ``scales="sum"|"mean"``.
- :func:`feature_matching_loss`: pix2pixHD's D feature matching, ``lambda * sum_scales 1/num_D
  * sum_layers 4/(n_layers+1) * L1(fake_feat, real_feat.detach())`` over every feature but the
  logits; SPADE uses ``layer_weight=1``.
- :class:`VGGPerceptualLoss`: pix2pixHD's VGG19 loss (relu1_1 .. relu5_1 with weights 1/32, 1/16,
  1/8, 1/4, 1, L1), built only from a VGG19 weights file the user has locally (torchvision's
  ``vgg19-dcbb9e9d.pth`` layout, ``.pth``/``.pt`` or ``.safetensors``); nothing is downloaded. As in
  pix2pixHD and SPADE the [-1, 1] images go in without ImageNet normalisation.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lesion_metrics.safe_load import load_problem

GAN_MODES = ("lsgan", "vanilla", "hinge")

__all__ = ["GAN_MODES", "gan_loss", "feature_matching_loss", "VGGPerceptualLoss", "VGGWeightsError"]


def _scales(outputs) -> list[list[torch.Tensor]]:
    if isinstance(outputs, torch.Tensor):
        return [[outputs]]
    return [list(scale) if isinstance(scale, (list, tuple)) else [scale] for scale in outputs]


def gan_loss(outputs, real: bool, mode: str = "lsgan", for_discriminator: bool = True,
             scales: str = "sum") -> torch.Tensor:
    """Adversarial loss on every scale's logits (the last entry of each scale).

    ``real`` is the target: True for D on reals and for G on fakes (non-hinge modes)."""
    if mode not in GAN_MODES:
        raise ValueError(f"gan mode {mode!r} is not one of {GAN_MODES}")
    if scales not in ("sum", "mean"):
        raise ValueError(f"scales must be 'sum' or 'mean', not {scales!r}")
    terms = []
    for scale in _scales(outputs):
        logits = scale[-1].float()
        if mode == "lsgan":
            terms.append(F.mse_loss(logits, torch.full_like(logits, float(real))))
        elif mode == "vanilla":
            terms.append(F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real))))
        elif for_discriminator:
            terms.append(F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean())
        else:
            if not real:
                raise ValueError("hinge generator loss is defined for real=True only (G wants D(fake) high)")
            terms.append(-logits.mean())
    total = torch.stack(terms).sum()
    return total / len(terms) if scales == "mean" else total


def feature_matching_loss(fake_outputs, real_outputs, weight: float = 10.0,
                          layer_weight: float | None = None) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching (real features are detached).

    ``layer_weight`` defaults to pix2pixHD's ``4 / (n_layers + 1)`` where n_layers + 1 is the
    number of matched features per scale; the per-scale weight is ``1 / num_D``."""
    fake_scales, real_scales = _scales(fake_outputs), _scales(real_outputs)
    if len(fake_scales) != len(real_scales):
        raise ValueError(f"feature matching: {len(fake_scales)} fake scales vs {len(real_scales)} real")
    total = fake_scales[0][0].new_zeros((), dtype=torch.float32)
    for fake, real in zip(fake_scales, real_scales, strict=True):
        matched = len(fake) - 1  # every intermediate feature, not the logits
        per_layer = 4.0 / matched if layer_weight is None else layer_weight
        for f, r in zip(fake[:-1], real[:-1], strict=True):
            total = total + per_layer / len(fake_scales) * F.l1_loss(f.float(), r.detach().float())
    return weight * total


# ---------------------------------------------------------------------------------------------
# VGG19 perceptual loss

# torchvision's vgg19().features, up to relu5_1 (index 29): ints are 3x3 conv widths, "M" max-pool.
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
_SLICE_ENDS = (2, 7, 12, 21, 30)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (exclusive ends)
_SLICE_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class VGGWeightsError(RuntimeError):
    """The VGG19 weights file is missing, unreadable, or not a VGG19 state dict."""


def _vgg19_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise VGGWeightsError(f"{path}: VGG19 weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # optional: lesion-metrics needs only torch

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch/safetensors raise several types for corrupt files
        raise VGGWeightsError(f"{path}: unreadable VGG19 weights ({load_problem(error)})") from None


class VGGPerceptualLoss(nn.Module):
    """``sum_i w_i * L1(vgg_i(fake), vgg_i(real).detach())``; multiply by lambda (10) yourself."""

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        path = Path(weights_path)
        state = _read_state_dict(path)
        features = _vgg19_features()
        wanted = {}
        for key in features.state_dict():
            source = next((k for k in (f"features.{key}", key) if k in state), None)
            if source is None:
                raise VGGWeightsError(f"{path}: no tensor for VGG19 layer features.{key}")
            wanted[key] = state[source]
        try:
            features.load_state_dict(wanted)
        except RuntimeError as error:
            raise VGGWeightsError(f"{path}: not VGG19 weights ({str(error).splitlines()[0]})") from None
        self.slices = nn.ModuleList(
            features[start:end] for start, end in zip((0, *_SLICE_ENDS[:-1]), _SLICE_ENDS)
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen feature extractor, whatever the owner's mode

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # targets need no graph (pix2pixHD builds one and detaches it)
            targets, y = [], real
            for block in self.slices:
                y = block(y)
                targets.append(y)
        total, x = fake.new_zeros((), dtype=torch.float32), fake
        for weight, block, target in zip(_SLICE_WEIGHTS, self.slices, targets, strict=True):
            x = block(x)
            total = total + weight * F.l1_loss(x.float(), target.float())
        return total
