import math

import pytest
import torch
from lesion_models import load_pretrained
from lesion_models.pggan import (
    EqualizedConv2d,
    EqualizedLinear,
    PGGANConfig,
    PGGANDiscriminator,
    PGGANGenerator,
    minibatch_stddev,
    pixel_norm,
)

TINY = dict(resolution=32, fmap_base=64, fmap_max=16, z_dim=8)


def tiny(num_classes=0, **overrides):
    torch.manual_seed(0)
    config = PGGANConfig(**{**TINY, "num_classes": num_classes, **overrides})
    return PGGANGenerator(config), PGGANDiscriminator(config)


def test_official_channel_rule_and_latent_default():
    config = PGGANConfig(resolution=1024)
    assert config.z_dim == 512
    assert [config.nf(s) for s in range(1, 10)] == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    with pytest.raises(ValueError, match="power of two"):
        PGGANConfig(resolution=48)


@pytest.mark.parametrize("resolution", [4, 8, 16, 32])
@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_shapes_at_every_resolution(resolution, alpha):
    G, D = tiny(num_classes=3)
    G.set_stage(resolution, alpha)
    D.set_stage(resolution, alpha)
    z = torch.randn(8, G.z_dim)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    images = G(z, labels)
    assert images.shape == (8, 3, resolution, resolution)
    scores, logits = D(images)
    assert scores.shape == (8,) and logits.shape == (8, 3)
    assert G.resolution == resolution and D.resolution == resolution


def test_every_parameter_gets_a_gradient_at_full_resolution_mid_fade():
    G, D = tiny(num_classes=3)
    for net in (G, D):
        net.set_stage(32, 0.5)  # mid-fade uses both the new and the previous toRGB/fromRGB
    # Earlier toRGB/fromRGB layers (4..8 px) are only used at earlier stages; check them there.
    used = {n for n, _ in G.named_parameters() if not n.startswith("to_rgb.")} | {"to_rgb.2.weight", "to_rgb.3.weight"}
    scores, logits = D(G(torch.randn(4, G.z_dim), torch.tensor([0, 1, 2, 0])))
    (scores.sum() + logits.sum()).backward()
    for name, p in G.named_parameters():
        if name in used:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in D.named_parameters():
        if not name.startswith("from_rgb.") or name.split(".")[1] in ("2", "3"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # ...and at 4 px the first toRGB/fromRGB train.
    G.zero_grad(), D.zero_grad()
    G.set_stage(4), D.set_stage(4)
    D(G(torch.randn(4, G.z_dim), torch.tensor([0, 1, 2, 0])))[0].sum().backward()
    assert G.to_rgb[0].weight.grad.abs().sum() > 0 and D.from_rgb[0].weight.grad.abs().sum() > 0


def test_equalized_lr_scales_at_run_time():
    conv = EqualizedConv2d(6, 5, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(6 * 9))
    x = torch.randn(2, 6, 7, 7)
    expected = torch.nn.functional.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    with torch.no_grad():  # the stored weight is the unscaled N(0,1) parameter
        conv.weight.mul_(2)
    torch.testing.assert_close(conv(x), 2 * expected)
    dense = EqualizedLinear(16, 4, gain=1.0)
    assert dense.scale == pytest.approx(0.25)
    assert 0.8 < dense.weight.std().item() < 1.2  # weights ~ N(0, 1), not He-initialised


@pytest.mark.parametrize("small", [6, 16])  # below and at the sizes that take the stride-2 form
def test_resampling_convolutions_equal_the_separate_layers(small):
    torch.manual_seed(0)
    conv = EqualizedConv2d(5, 7, 3).double()
    with torch.no_grad():
        conv.bias.normal_()
    x, large = torch.randn(2, 5, small, small, dtype=torch.float64), torch.randn(2, 5, 2 * small, 2 * small, dtype=torch.float64)
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    torch.testing.assert_close(conv.upscale_conv(x), conv(up), rtol=0, atol=1e-12)
    torch.testing.assert_close(conv.conv_downscale(large), torch.nn.functional.avg_pool2d(conv(large), 2), rtol=0, atol=1e-12)


def test_fused_scale_discriminator_activates_after_the_downscale():
    _, D_fused = tiny(fused_scale=True)
    _, D_plain = tiny(fused_scale=False)
    D_plain.load_state_dict(D_fused.state_dict())
    # D: the official fused block is act(bias(conv_down(x))); the unfused one downscale(act(bias(conv(x)))).
    images = torch.randn(4, 3, 8, 8)
    D_fused.set_stage(8), D_plain.set_stage(8)
    conv0, conv1 = D_fused.blocks[0]
    x = D_fused._lrelu(conv0(D_fused._lrelu(D_fused.from_rgb[1](images))))
    fused_block = D_fused._lrelu(torch.nn.functional.avg_pool2d(conv1(x), 2))
    plain_block = torch.nn.functional.avg_pool2d(D_fused._lrelu(conv1(x)), 2)
    assert not torch.allclose(fused_block, plain_block)
    for D, block in ((D_fused, fused_block), (D_plain, plain_block)):
        tail = D._lrelu(D.conv4(minibatch_stddev(block, 4)))
        expected = D.dense1(D._lrelu(D.dense0(tail.flatten(1))))[:, 0]
        torch.testing.assert_close(D(images)[0], expected, rtol=1e-5, atol=1e-5)


def test_pixel_norm_gives_unit_rms():
    x = torch.randn(3, 7, 4, 4) * 5
    y = pixel_norm(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(3, 4, 4), rtol=1e-4, atol=1e-4)


def test_minibatch_stddev_against_hand_computation():
    torch.manual_seed(1)
    x = torch.randn(8, 3, 2, 2)
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (8, 4, 2, 2)
    torch.testing.assert_close(out[:, :3], x)
    # Official grouping: sample i belongs to group i % (N / G); population std over the group.
    for i in range(8):
        members = x[[j for j in range(8) if j % 2 == i % 2]]
        std = torch.sqrt(members.var(dim=0, unbiased=False) + 1e-8).mean()
        torch.testing.assert_close(out[i, 3], torch.full((2, 2), std.item()))
    with pytest.raises(ValueError, match="divisible"):
        minibatch_stddev(torch.randn(6, 3, 2, 2), 4)


def test_fade_endpoints_equal_lower_and_higher_paths():
    G, D = tiny()
    G.eval()
    z = torch.randn(4, G.z_dim)
    G.set_stage(16, 1.0)
    high = G(z)
    G.set_stage(16, 0.0)
    faded_out = G(z)
    G.set_stage(8, 1.0)
    low = G(z)
    torch.testing.assert_close(faded_out, torch.nn.functional.interpolate(low, scale_factor=2), rtol=0, atol=1e-6)
    G.set_stage(16, 1e-9 + 1.0 - 1e-9)
    torch.testing.assert_close(G(z), high)
    G.set_stage(16, 0.999999)
    torch.testing.assert_close(G(z), high, rtol=1e-4, atol=1e-4)

    images = torch.randn(4, 3, 16, 16)
    D.set_stage(16, 0.0)
    d_faded = D(images)[0]
    D.set_stage(8, 1.0)
    torch.testing.assert_close(d_faded, D(torch.nn.functional.avg_pool2d(images, 2))[0])
    D.set_stage(16, 1.0)
    d_high = D(images)[0]
    D.set_stage(16, 0.999999)
    torch.testing.assert_close(D(images)[0], d_high, rtol=1e-4, atol=1e-4)


def test_generator_output_range_and_conditioning():
    G, _ = tiny(num_classes=3)
    G.eval()
    z = torch.randn(6, G.z_dim) * 50
    images = G(z, torch.arange(6) % 3)
    assert images.min() >= -1 and images.max() <= 1
    with pytest.raises(ValueError, match="labels"):
        G(z)
    # Different labels, same latent -> different images (the label reaches the network).
    same = torch.randn(1, G.z_dim).expand(3, -1)
    out = G(same, torch.arange(3))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_save_load_round_trip_keeps_weights_and_stage(tmp_path):
    G, D = tiny(num_classes=3)
    G.set_stage(16, 0.25)
    D.set_stage(16, 0.25)
    G.eval()
    z, labels = torch.randn(4, G.z_dim), torch.tensor([0, 1, 2, 1])
    G.save_pretrained(tmp_path / "G")
    D.save_pretrained(tmp_path / "D")
    G2 = load_pretrained(tmp_path / "G")
    D2 = PGGANDiscriminator.from_pretrained(tmp_path / "D")
    assert isinstance(G2, PGGANGenerator)
    assert (G2.resolution, G2.alpha, G2.z_dim, G2.num_classes) == (16, 0.25, G.z_dim, 3)
    torch.testing.assert_close(G2(z, labels), G(z, labels), rtol=0, atol=0)
    images = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(D2(images)[0], D(images)[0], rtol=0, atol=0)


def test_bad_stage_is_rejected():
    G, D = tiny()
    with pytest.raises(ValueError, match="stage resolution"):
        G.set_stage(64)
    D.set_stage(8)
    with pytest.raises(ValueError, match="8 px"):
        D(torch.randn(4, 3, 16, 16))
