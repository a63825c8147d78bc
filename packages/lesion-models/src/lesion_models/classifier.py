"""Lesion classifiers on torchvision backbones (ResNet-18/50, DenseNet-121, EfficientNet-B0).

Randomly initialised by default; ``load_imagenet_weights`` copies a *local* torchvision ImageNet
checkpoint into the backbone (nothing is ever downloaded). torchvision is imported lazily inside
this file so ``import lesion_models`` needs only torch + safetensors; building a classifier needs
the ``classifiers`` extra.

Inputs are images in [-1, 1] like every other model here; the network maps them to ImageNet
statistics first, so ImageNet weights see the input distribution they were trained on.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import torch
from torch import nn

from lesion_models.hub import Pretrained, register, torch_load_problem

ARCHITECTURES = ("resnet18", "resnet50", "densenet121", "efficientnet_b0")
# The ImageNet head differs in size from ours, so it is never copied from a weights file.
_HEAD_PREFIX = {"resnet18": "fc.", "resnet50": "fc.", "densenet121": "classifier.", "efficientnet_b0": "classifier."}
# Old torchvision DenseNet checkpoints name "norm.1" what the modules now call "norm1".
_LEGACY_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class ClassifierConfig:
    arch: str = "resnet18"
    num_classes: int = 3
    # Informational: every backbone ends in adaptive pooling, so any input size >= 32 px works.
    resolution: int = 224
    # Dropout before the final linear layer; torchvision's defaults (EfficientNet-B0: 0.2,
    # DenseNet/ResNet: none) are used when None.
    dropout: float | None = None
    class_names: tuple[str, ...] = ("nevus", "melanoma", "seborrheic_keratosis")

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"classifier arch {self.arch!r} is not one of {ARCHITECTURES}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for {self.num_classes} classes")


def _build_backbone(config: ClassifierConfig) -> nn.Module:
    try:
        from torchvision import models
    except ImportError:
        raise ImportError(
            "lesion_models.classifier needs torchvision: install lesion-models[classifiers]"
        ) from None
    kwargs = {"weights": None, "num_classes": config.num_classes}
    if config.arch == "efficientnet_b0" and config.dropout is not None:
        kwargs["dropout"] = config.dropout
    net = getattr(models, config.arch)(**kwargs)
    if config.dropout and config.arch != "efficientnet_b0":
        name = _HEAD_PREFIX[config.arch][:-1]
        setattr(net, name, nn.Sequential(nn.Dropout(config.dropout), getattr(net, name)))
    return net


@register
class LesionClassifier(nn.Module, Pretrained):
    """``forward(images in [-1, 1], (N, 3, H, W))`` -> class logits ``(N, num_classes)``."""

    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.net = _build_backbone(config)
        # Constants, not weights: kept out of the state dict (persistent=False).
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", 0.5 / std, persistent=False)
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * self.scale + self.shift)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Softmax probabilities, evaluated in batches without gradients."""
        outputs = [self(chunk).float().softmax(dim=1) for chunk in images.split(batch_size)]
        return torch.cat(outputs)


def load_imagenet_weights(model: LesionClassifier, path: str | os.PathLike) -> LesionClassifier:
    """Copy a local torchvision ImageNet checkpoint (``.pth`` state dict or ``.safetensors``) into
    ``model``'s backbone, leaving our freshly initialised class head alone."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ImageNet weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise several types for bad files
        raise ValueError(f"{path}: weights file {torch_load_problem(error)}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    head = _HEAD_PREFIX[model.config.arch]
    backbone = {
        _LEGACY_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items() if not k.startswith(head)
    }
    own = {k for k in model.net.state_dict() if not k.startswith(head)}
    # Checkpoints from before BatchNorm counted its batches lack num_batches_tracked; harmless.
    missing = {k for k in own - set(backbone) if not k.endswith("num_batches_tracked")}
    unexpected = set(backbone) - own
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a torchvision {model.config.arch} checkpoint "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    model.net.load_state_dict(backbone, strict=False)
    return model
