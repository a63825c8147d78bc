"""Shapes, gradients and save/load of the mask-to-image networks (tiny widths, 64 and 128 px)."""

import pytest
import torch
from lesion_models import load_pretrained
from lesion_models.pix2pix import UNetGenerator, UNetGeneratorConfig, patchgan70_config
from lesion_models.pix2pixhd import (
    DiscriminatorConfig,
    MultiscaleDiscriminator,
    Pix2PixHDConfig,
    Pix2PixHDGenerator,
    region_average,
    up_block,
)
from lesion_models.spade import SPADEGenerator, SPADEGeneratorConfig, spade_discriminator_config
from lesion_models.unet import UNetSegmenter, UNetSegmenterConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs run far faster single-threaded on a shared, loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {
    "pix2pixhd": lambda res: Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_blocks=1)),
    "ours": lambda res: Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_blocks=1, fusion=True, feat_num=3, feat_ngf=2)),
    "local": lambda res: Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_blocks=1, fusion=True, n_local_enhancers=1)),
    "resize": lambda res: Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_blocks=1, fusion=True, n_local_enhancers=1,
                                                             upsample="resize")),
    "pix2pix": lambda res: UNetGenerator(UNetGeneratorConfig(ngf=2, num_downs=res.bit_length() - 1)),
    "spade": lambda res: SPADEGenerator(SPADEGeneratorConfig(nf=2, hidden=4)),
}


def labels(b, res, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(1, 4, (b, 1, 1), generator=g)
    yy, xx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    lesion = ((yy - res / 2) ** 2 + (xx - res / 2) ** 2 < (res / 4) ** 2).long()
    label = lesion * cls
    onehot = torch.nn.functional.one_hot(label, 4).permute(0, 3, 1, 2).float()
    boundary = (lesion[None] != torch.roll(lesion, 1, 0)).float().expand(b, 1, res, res)
    return torch.cat([onehot, boundary], 1)


def assert_all_params_get_gradients(model):
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("res", [64, 128])
@pytest.mark.parametrize("arch", sorted(TINY))
def test_generator_shapes_and_gradients(arch, res):
    torch.manual_seed(0)
    g = TINY[arch](res)
    x = labels(2, res)
    out = g(x, image=torch.rand(2, 3, res, res) * 2 - 1)
    assert out.shape == (2, 3, res, res)
    assert out.abs().max() <= 1
    out.square().mean().backward()
    assert_all_params_get_gradients(g)


@pytest.mark.parametrize("config", [
    DiscriminatorConfig(input_nc=8, ndf=4), patchgan70_config(8, ndf=4), spade_discriminator_config(8, ndf=4)
], ids=["pix2pixhd", "pix2pix", "spade"])
@pytest.mark.parametrize("res", [64, 128])
def test_discriminator_features_and_gradients(config, res):
    d = MultiscaleDiscriminator(config)
    outputs = d(torch.randn(2, 8, res, res))
    assert len(outputs) == config.num_D
    for scale, feats in enumerate(outputs):
        assert len(feats) == config.n_layers + 2  # n_layers + 1 matched features + logits
        assert feats[-1].shape[:2] == (2, 1)
        assert feats[0].shape[-1] == res // 2 ** (scale + 1) + (1 if config.padding == 2 else 0)
    sum(f[-1].mean() for f in outputs).backward()
    assert_all_params_get_gradients(d)


def test_patchgan70_has_70px_receptive_field():
    d = MultiscaleDiscriminator(patchgan70_config(3, ndf=2)).eval()  # batch statistics would mix positions
    x = torch.zeros(1, 3, 140, 140, requires_grad=True)
    d(x)[0][-1][0, 0, 8, 8].backward()
    rows = x.grad[0].abs().sum((0, 2)).nonzero()
    assert rows.max() - rows.min() + 1 == 70


def test_segmenter_shape_and_gradients():
    seg = UNetSegmenter(UNetSegmenterConfig(base=2, depth=3))
    out = seg(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    out.mean().backward()
    assert_all_params_get_gradients(seg)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_save_load_round_trip(arch, tmp_path):
    torch.manual_seed(1)
    g = TINY[arch](64).eval()
    if arch == "ours":
        g.update_feature_bank(torch.rand(3, 3, 64, 64), labels(3, 64)[:, :4])
    g.save_pretrained(tmp_path / "g")
    loaded = load_pretrained(tmp_path / "g")
    assert type(loaded) is type(g) and loaded.config == g.config
    x = labels(2, 64)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    torch.testing.assert_close(loaded(x, generator=gen()), g(x, generator=gen()))


def test_sizes_not_multiple_of_stride_fail_clearly():
    g = TINY["pix2pixhd"](64)
    with pytest.raises(ValueError, match=r"Pix2PixHDGenerator: input size 60x60 is not a multiple of 16"):
        g(torch.zeros(1, 5, 60, 60))
    with pytest.raises(ValueError, match="multiple of 32"):
        TINY["spade"](64)(torch.zeros(1, 5, 48, 48))


def test_region_average_is_constant_per_region():
    onehot = labels(2, 16)[:, :4]
    feats = region_average(torch.randn(2, 3, 16, 16), onehot)
    for b in range(2):
        for label in range(4):
            region = feats[b][:, onehot[b, label].bool()]
            if region.numel():
                assert torch.allclose(region, region[:, :1].expand_as(region))


def test_feature_bank_gives_variations_and_is_seeded():
    torch.manual_seed(0)
    g = TINY["ours"](64).eval()
    x = labels(1, 64)
    g.update_feature_bank(torch.rand(6, 3, 64, 64) * 2 - 1, labels(6, 64, seed=1)[:, :4])
    assert int(g.bank_count[0]) == 6
    a = g(x, generator=torch.Generator().manual_seed(1))
    b = g(x, generator=torch.Generator().manual_seed(2))
    c = g(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, b)


def test_faithful_defaults():
    c = Pix2PixHDConfig()
    assert (c.ngf, c.n_downsampling, c.n_blocks, c.norm, c.n_blocks_local) == (64, 4, 9, "instance", 3)
    assert c.upsample == "transpose"
    d = DiscriminatorConfig()
    assert (d.ndf, d.n_layers, d.num_D, d.norm) == (64, 3, 2, "instance")
    assert UNetGeneratorConfig().dropout == 0.5 and UNetGeneratorConfig().norm == "batch"
    assert SPADEGeneratorConfig().nf == 64 and spade_discriminator_config(8).spectral


def test_resize_upsampling_has_no_checkerboard_on_a_flat_input():
    # A flat feature map (a lesion's interior) through pix2pixHD's stride-2 transposed conv comes
    # out with a period-2 pattern (odd and even pixels get different numbers of kernel taps); the
    # resize-conv option treats every pixel alike.
    torch.manual_seed(0)
    flat = torch.ones(1, 8, 8, 8)
    for mode, periodic in (("transpose", True), ("resize", False)):
        up = up_block(8, 4, "none", mode)[:-1]  # without the ReLU
        with torch.no_grad():
            out = up(flat)[..., 2:-2, 2:-2]  # away from the border
        assert out.shape[-1] == 12
        assert (out.std((2, 3)) > 1e-3).all().item() is periodic
    with pytest.raises(ValueError, match="upsample 'bilinear'"):
        Pix2PixHDConfig(upsample="bilinear")
