"""DCGAN and LAPGAN networks: shapes, the published layer rules, gradients, exact pyramid, save/load.

(``torch.testing.assert_close`` is avoided: its first call costs ~15 s of imports.)"""

import pytest
import torch
from lesion_models import load_pretrained
from lesion_models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from lesion_models.lapgan import (
    LAPGANConfig,
    LAPGANDiscriminator,
    LAPGANGenerator,
    down,
    laplacian_pyramid,
    reconstruct,
    up,
)
from torch import nn


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_dcgan_shapes_at_every_resolution(resolution):
    torch.manual_seed(0)
    config = DCGANConfig(resolution=resolution, z_dim=8, ngf=4, ndf=4)
    G, D = DCGANGenerator(config), DCGANDiscriminator(config)
    images = G(torch.randn(3, 8))
    assert images.shape == (3, 3, resolution, resolution)
    assert images.abs().max() <= 1  # tanh
    scores, logits = D(images)
    assert scores.shape == (3,) and logits is None
    assert (G.z_dim, G.num_classes, G.resolution) == (8, 0, resolution)


def test_dcgan_follows_the_paper_at_64px():
    G, D = DCGANGenerator(DCGANConfig()), DCGANDiscriminator(DCGANConfig())
    g_convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in g_convs] == [512, 256, 128, 64, 3]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 4 and isinstance(G.net[-1], nn.Tanh)
    d_layers = list(D.net)
    assert isinstance(d_layers[1], nn.LeakyReLU) and d_layers[1].negative_slope == 0.2  # no BN on the first layer
    assert [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)] == [64, 128, 256, 512, 1]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3
    weights = torch.cat([m.weight.flatten() for m in g_convs])
    assert weights.mean().abs() < 1e-3 and abs(weights.std().item() - 0.02) < 1e-3
    with pytest.raises(ValueError, match="32..256"):
        DCGANConfig(resolution=16)
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(1, 100), torch.zeros(1, dtype=torch.long))


def test_dcgan_gradients_reach_every_parameter():
    config = DCGANConfig(resolution=32, z_dim=8, ngf=4, ndf=4)
    G, D = DCGANGenerator(config), DCGANDiscriminator(config)
    D(G(torch.randn(4, 8)))[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in list(G.parameters()) + list(D.parameters()))


def test_laplacian_pyramid_is_exact():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    coarse, residuals = laplacian_pyramid(x, 2)
    assert coarse.shape[-1] == 8 and [r.shape[-1] for r in residuals] == [16, 32]
    assert (reconstruct(coarse, residuals) - x).abs().max() <= 1e-6
    assert torch.equal(coarse, down(down(x)))
    assert torch.equal(residuals[1], x - up(down(x)))
    # Not trivially exact: the residuals carry real detail, and dropping one changes the image.
    assert residuals[1].abs().mean() > 0.1
    assert (reconstruct(coarse, [residuals[0], torch.zeros_like(residuals[1])]) - x).abs().max() > 0.1


def tiny_lapgan(**overrides):
    torch.manual_seed(0)
    config = LAPGANConfig(**{"resolution": 32, "coarse_resolution": 8, "coarse_z_dim": 8, "coarse_g_hidden": 16,
                             "coarse_d_hidden": 16, "level_g_features": 4, "level_d_features": 4, **overrides})
    return LAPGANGenerator(config), LAPGANDiscriminator(config)


def test_lapgan_sampling_is_upsample_plus_residual():
    G, D = tiny_lapgan()
    assert G.z_dim == 8 + 16 * 16 + 32 * 32 and G.num_classes == 0 and G.resolution == 32
    z = torch.randn(3, G.z_dim)
    G.train()
    image = G(z)
    code, (n16, n32) = G.split_latent(z)
    assert n16.shape == (3, 1, 16, 16) and n32.shape == (3, 1, 32, 32)
    i8 = G.coarse(code)
    i16 = up(i8) + G.residual(0, up(i8), n16)
    assert torch.equal(image, up(i16) + G.residual(1, up(i16), n32))
    G.eval()
    assert torch.equal(G(z), G(z)) and G(z).abs().max() <= 1
    scores, logits = D.level(1, image, up(i16))
    assert scores.shape == (3,) and logits is None and D.coarse(i8)[0].shape == (3,)
    with pytest.raises(ValueError, match="coarse_resolution"):
        LAPGANConfig(resolution=8, coarse_resolution=8)


def test_lapgan_gradients_reach_every_parameter():
    G, D = tiny_lapgan()
    z = torch.randn(4, G.z_dim)
    code, planes = G.split_latent(z)
    loss = D.coarse(G.coarse(code))[0].sum()
    condition = up(torch.rand(4, 3, 8, 8))
    loss = loss + D.level(0, condition + G.residual(0, condition, planes[0]), condition)[0].sum()
    condition = up(torch.rand(4, 3, 16, 16))
    loss = loss + D.level(1, condition + G.residual(1, condition, planes[1]), condition)[0].sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in list(G.parameters()) + list(D.parameters()))


@pytest.mark.parametrize("build", ["dcgan", "lapgan"])
def test_save_and_load_round_trip(tmp_path, build):
    if build == "dcgan":
        config = DCGANConfig(resolution=32, z_dim=8, ngf=4, ndf=4)
        G, D = DCGANGenerator(config), DCGANDiscriminator(config)
    else:
        G, D = tiny_lapgan()
    G.eval()
    z = torch.randn(2, G.z_dim)
    for model in (G, D):
        model.save_pretrained(tmp_path / type(model).__name__)
    G2 = load_pretrained(tmp_path / type(G).__name__)
    D2 = type(D).from_pretrained(tmp_path / type(D).__name__)
    assert type(G2) is type(G) and G2.z_dim == G.z_dim
    assert torch.equal(G2(z), G(z))
    assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(), D2.state_dict().values()))
