import ast
import importlib.util
import pathlib

import pytest
import torch
from lesion_models import load_pretrained
from lesion_models.classifier import ARCHITECTURES, ClassifierConfig, LesionClassifier, load_imagenet_weights

# torchvision is the `classifiers` extra: a lean `--exact` lesion-models env skips these.
needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision (lesion-models[classifiers]) not installed")


# The two large backbones take most of this file's time; they run with -m slow.
@needs_torchvision
@pytest.mark.parametrize("arch", [a if a in ("resnet18", "efficientnet_b0") else pytest.param(a, marks=pytest.mark.slow)
                                  for a in ARCHITECTURES])
def test_shapes_gradients_and_roundtrip(arch, tmp_path):
    torch.manual_seed(0)
    model = LesionClassifier(ClassifierConfig(arch=arch, resolution=32))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    loaded = load_pretrained(model.save_pretrained(tmp_path / arch))
    assert isinstance(loaded, LesionClassifier) and loaded.config == model.config
    torch.testing.assert_close(loaded(x), model(x))
    probs = loaded.predict_proba(x, batch_size=1)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


@needs_torchvision
def test_input_is_mapped_to_imagenet_statistics():
    model = LesionClassifier(ClassifierConfig()).eval()
    seen = {}
    model.net.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    model(torch.full((1, 3, 32, 32), 1.0))  # white in [-1, 1] is 1.0 in [0, 1]
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen["x"][0, :, 0, 0], expected)


@needs_torchvision
def test_imagenet_weights_file_fills_backbone_not_head(tmp_path):
    from torchvision import models

    reference = models.resnet18(weights=None)  # stands in for a downloaded ImageNet checkpoint
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = load_imagenet_weights(LesionClassifier(ClassifierConfig(arch="resnet18")), path)
    torch.testing.assert_close(model.net.conv1.weight, reference.conv1.weight)
    assert model.net.fc.weight.shape == (3, 512)
    with pytest.raises(ValueError, match="not a torchvision densenet121"):
        load_imagenet_weights(LesionClassifier(ClassifierConfig(arch="densenet121")), path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_imagenet_weights(model, tmp_path / "missing.pth")


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="vgg16"):
        ClassifierConfig(arch="vgg16")


def test_torchvision_is_imported_only_inside_functions():
    """lesion-models' core must import without torchvision (it is the `classifiers` extra)."""
    src = pathlib.Path(__file__).resolve().parents[1] / "src" / "lesion_models"
    for path in src.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "torchvision" for n in names), f"{path.name} imports torchvision at top level"
