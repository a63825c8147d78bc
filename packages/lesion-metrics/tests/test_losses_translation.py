"""Translation losses against hand computations."""

import pytest
import torch
from lesion_metrics.losses.translation import VGGPerceptualLoss, VGGWeightsError, feature_matching_loss, gan_loss
from torch import nn


def test_lsgan_sums_scales_and_vanilla_matches_bce():
    outputs = [[torch.zeros(1, 2, 2, 2), torch.full((1, 1, 2, 2), 0.5)], [torch.full((1, 1, 1, 1), 2.0)]]
    # real target 1: (0.5 - 1)^2 = 0.25 and (2 - 1)^2 = 1, summed over scales (pix2pixHD)
    assert gan_loss(outputs, real=True).item() == pytest.approx(1.25)
    assert gan_loss(outputs, real=False).item() == pytest.approx(0.25 + 4.0)
    assert gan_loss(outputs, real=True, scales="mean").item() == pytest.approx(0.625)
    logits = torch.tensor([[[[0.0, 1.0]]]])
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(-1.0)))) / 2
    assert gan_loss(logits, real=True, mode="vanilla").item() == pytest.approx(expected.item())


def test_hinge_discriminator_and_generator():
    logits = torch.tensor([[[[-2.0, 0.5, 3.0]]]])
    assert gan_loss(logits, True, "hinge").item() == pytest.approx((3 + 0.5 + 0) / 3)
    assert gan_loss(logits, False, "hinge").item() == pytest.approx((0 + 1.5 + 4) / 3)
    assert gan_loss(logits, True, "hinge", for_discriminator=False).item() == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="hinge generator"):
        gan_loss(logits, False, "hinge", for_discriminator=False)
    with pytest.raises(ValueError, match="not one of"):
        gan_loss(logits, True, "wgan")


def test_feature_matching_matches_hand_computation():
    # num_D = 2 scales, n_layers = 3 -> 4 matched features + logits per scale.
    torch.manual_seed(0)
    fake = [[torch.randn(2, 3, 4, 4) for _ in range(5)] for _ in range(2)]
    real = [[torch.randn(2, 3, 4, 4) for _ in range(5)] for _ in range(2)]
    by_hand = 0.0
    for i in range(2):
        for j in range(4):  # the logits (j = 4) are not matched
            by_hand += 10.0 * (1 / 2) * (4.0 / (3 + 1)) * (fake[i][j] - real[i][j]).abs().mean().item()
    assert feature_matching_loss(fake, real).item() == pytest.approx(by_hand, rel=1e-6)
    spade = sum((fake[i][j] - real[i][j]).abs().mean().item() for i in range(2) for j in range(4)) * 10 / 2
    assert feature_matching_loss(fake, real, layer_weight=1.0).item() == pytest.approx(spade, rel=1e-6)


def test_feature_matching_detaches_real_features():
    fake = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2)]]
    real = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2)]]
    feature_matching_loss(fake, real).backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None


def vgg19_state_dict():
    from lesion_metrics.losses.translation import _vgg19_features

    torch.manual_seed(0)
    features = _vgg19_features()
    # torchvision's layout: "features.N.weight" plus classifier tensors that must be ignored.
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    return state, features


def test_vgg_loss_loads_torchvision_layout_and_weights_slices(tmp_path):
    state, features = vgg19_state_dict()
    torch.save(state, tmp_path / "vgg19.pth")
    loss = VGGPerceptualLoss(tmp_path / "vgg19.pth")
    assert all(not p.requires_grad for p in loss.parameters())
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    expected, a, b = 0.0, x, y
    for (start, end), w in zip([(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)], [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]):
        a, b = features[start:end](a), features[start:end](b)
        expected += w * (a - b).abs().mean().item()
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-5)
    assert loss(x, x).item() == 0.0


def test_vgg_loss_errors_name_the_file(tmp_path):
    with pytest.raises(VGGWeightsError, match="vgg.pth: VGG19 weights file not found"):
        VGGPerceptualLoss(tmp_path / "vgg.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a pickle")
    with pytest.raises(VGGWeightsError, match="bad.pth: unreadable"):
        VGGPerceptualLoss(tmp_path / "bad.pth")
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "other.pth")
    with pytest.raises(VGGWeightsError, match="other.pth: no tensor for VGG19 layer features.0.weight"):
        VGGPerceptualLoss(tmp_path / "other.pth")
