"""pix2pixHD parity: on NVIDIA/pix2pixHD's weights, our networks, our label input and our trainer's
losses and gradients give the reference's numbers (fixture written by
``tests/fixtures/reference/make_pix2pixhd.py``; a global and a local-enhancer + feature-encoder case)."""

from pathlib import Path

import pytest
import torch
from lesion_models.pix2pixhd import DiscriminatorConfig, MultiscaleDiscriminator, Pix2PixHDConfig, Pix2PixHDGenerator
from lesion_train import mask2image
from lesion_train.distributed import DistEnv

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
CASES = ("global", "local")
ZERO = 1e-4  # of the network's largest gradient: "zero" for a gradient that is exactly zero
FLOOR = 1e-2  # of the network's largest gradient: the least scale a gradient is compared against


@pytest.fixture
def load_case(reference_fixture, one_thread):
    tensors, meta = reference_fixture("pix2pixhd")

    def load(case: str):
        t = {k[len(case) + 1 :]: v for k, v in tensors.items() if k.startswith(case + ".")}
        config = meta["cases"][case]["ours"]
        G = Pix2PixHDGenerator(Pix2PixHDConfig(**config["generator"]))
        D = MultiscaleDiscriminator(DiscriminatorConfig(**config["discriminator"]))
        G.load_state_dict({**G.state_dict(), **{k[2:]: v for k, v in t.items() if k.startswith("G.")}}, strict=True)
        D.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("D.")}, strict=True)
        return t, G, D, meta

    return load


@pytest.mark.parametrize("case", CASES)
def test_label_input_is_the_reference_one_hot_and_instance_edges(load_case, case, assert_parity):
    t, _, _, meta = load_case(case)
    ours = mask2image.label_input(t["masks"], t["labels"], meta["num_classes"])
    assert_parity(ours, t["reference.label_input"], "label input", 0.0)


@pytest.mark.parametrize("case", CASES)
def test_generator_and_feature_encoder_outputs(load_case, case, assert_parity):
    t, G, _, meta = load_case(case)
    tol = meta["tolerances"]["outputs"]
    x = t["reference.label_input"]
    with torch.no_grad():
        assert_parity(G(x, image=t["images"]), t["reference.fake"], "generator output", tol)
        if G.config.feat_num:
            encoded = G.encoder(t["images"], x[:, : G.config.label_nc])
            assert_parity(encoded, t["reference.encoder"], "instance-averaged encoder output", tol)


@pytest.mark.parametrize("case", CASES)
def test_discriminator_features_at_every_layer_and_scale(load_case, case, assert_parity):
    t, _, D, meta = load_case(case)
    tol = meta["tolerances"]["outputs"]
    for name, image in (("real", t["images"]), ("fake", t["reference.fake"])):
        with torch.no_grad():
            outputs = D(torch.cat([t["reference.label_input"], image], 1))
        assert len(outputs) == D.config.num_D
        for s, features in enumerate(outputs):
            assert len(features) == D.config.n_layers + 2
            for j, feature in enumerate(features):
                assert_parity(feature, t[f"reference.D.{name}.{s}.{j}"], f"D({name}) scale {s} layer {j}", tol)


@pytest.mark.parametrize("case", CASES)
def test_trainer_losses_and_gradients_after_one_step(load_case, case, assert_parity, monkeypatch):
    """The trainer's step on the reference's networks: its LSGAN and feature-matching terms equal
    pix2pixHD's, and the gradients it leaves are those of pix2pixHD's ``loss_G.backward()`` (G and
    the encoder) and ``loss_D.backward()`` (D, half the sum of the real and fake terms)."""
    t, G, D, meta = load_case(case)
    monkeypatch.setattr(mask2image, "build_networks", lambda config, num_classes: (G, D))
    config = mask2image.Mask2ImageConfig(arch="pix2pixhd", resolution=meta["size"])
    trainer = mask2image.Mask2ImageTrainer(config, meta["num_classes"], DistEnv())
    terms = trainer.step({"images": t["images"], "masks": t["masks"], "labels": t["labels"]})
    tol = meta["tolerances"]
    for ours, reference in (("G_gan", "G_GAN"), ("G_feat", "G_GAN_Feat"), ("D_real", "D_real"), ("D_fake", "D_fake")):
        assert_parity(terms[ours], t[f"reference.loss.{reference}"], ours, tol["losses"])
    for prefix, net in (("G", G), ("D", D)):
        reference = {k[len(f"reference.grad.{prefix}.") :]: v for k, v in t.items()
                     if k.startswith(f"reference.grad.{prefix}.")}
        assert sorted(name for name, _ in net.named_parameters()) == sorted(reference)
        largest = max(g.abs().max() for g in reference.values())
        zero = biases_before_instance_norm(net)
        for name, param in net.named_parameters():
            if name in zero:  # exactly zero; both sides hold rounding noise only
                for side, grad in (("ours", param.grad), ("reference", reference[name])):
                    assert grad.abs().max() < ZERO * largest, f"grad {prefix}.{name} ({side}) is not zero"
                continue
            # A tensor whose gradient sums many cancelling terms (the encoder's output bias: 4e-4
            # of the largest) carries rounding error of the network's scale, not of its own.
            scale = max(reference[name].abs().max(), FLOOR * largest)
            error = ((param.grad.double() - reference[name].double()).abs().max() / scale).item()
            assert error <= tol["gradients"], f"grad {prefix}.{name}: max error {error:.3g} (allowed {tol['gradients']})"


def biases_before_instance_norm(net: torch.nn.Module) -> set[str]:
    """Conv biases followed by a non-affine instance norm, which removes them: their gradient is 0."""
    names = set()
    for prefix, module in net.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (name, layer), (_, after) in zip(children, children[1:]):
                if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and \
                        isinstance(after, torch.nn.InstanceNorm2d) and not after.affine:
                    names.add(f"{prefix}.{name}.bias")
    return names

def test_fusion_adds_only_its_own_layers_to_the_reference_generator(load_case):
    """Ours (seed B's fusion) with the fusion off is the reference generator; on, it adds only the
    ``global_net.fuse`` layers."""
    t, G, _, _ = load_case("global")
    fused = Pix2PixHDGenerator(Pix2PixHDConfig(**{**vars(G.config), "fusion": True}))
    reference = {k[2:]: v for k, v in t.items() if k.startswith("G.")}
    result = fused.load_state_dict(reference, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("global_net.fuse.") for k in result.missing_keys)


def test_initialisation_follows_each_reference(one_thread):
    """pix2pixHD's ``weights_init`` draws conv weights from N(0, 0.02) and leaves conv biases at
    PyTorch's default (uniform within 1/sqrt(fan_in)); pix2pix and SPADE zero them."""
    from lesion_models.pix2pix import patchgan70_config
    from lesion_models.spade import spade_discriminator_config

    torch.manual_seed(0)
    G = Pix2PixHDGenerator(Pix2PixHDConfig(ngf=8, n_downsampling=2, n_blocks=1))
    D = MultiscaleDiscriminator(DiscriminatorConfig(ndf=8))
    for conv in (G.global_net.blocks[0].body[1], G.to_rgb[1], D.scales[0].blocks[0][0], D.scales[1].blocks[1][0]):
        bound = 1 / (conv.weight[0].numel() ** 0.5)
        assert 0.015 < conv.weight.std() < 0.025
        assert conv.bias.abs().max() <= bound and conv.bias.abs().max() > bound / 4
    for config in (patchgan70_config(8, ndf=8), spade_discriminator_config(8, ndf=8)):
        biases = [block[0].bias for block in MultiscaleDiscriminator(config).scales[0].blocks]
        assert all(bias is None or not bias.any() for bias in biases)
        assert biases[0] is not None  # the first conv has no norm after it and keeps its bias


def test_vgg_perceptual_loss_on_shared_random_weights(reference_fixture, one_thread, tmp_path, assert_parity):
    """pix2pixHD's ``VGGLoss`` (relu1_1..relu5_1, weights 1/32..1, L1 to detached targets) on random
    VGG19 weights that the fixture script and this test draw from one seed."""
    import importlib.util

    from lesion_metrics.losses.translation import VGGPerceptualLoss, _vgg19_features
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("make_pix2pixhd", REFERENCE / "make_pix2pixhd.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    shapes = {f"features.{k}": v.shape for k, v in _vgg19_features().state_dict().items()}
    save_file(make.vgg19_weights(shapes), tmp_path / "vgg19.safetensors")
    t, meta = reference_fixture("pix2pixhd")
    fake = t["global.reference.fake"].clone().requires_grad_(True)
    loss = VGGPerceptualLoss(tmp_path / "vgg19.safetensors")(fake, t["global.images"])
    loss.backward()
    assert_parity(loss, t["vgg.loss"], "VGG loss", meta["tolerances"]["losses"])
    assert_parity(fake.grad, t["vgg.grad_fake"], "VGG loss gradient in the fake", meta["tolerances"]["gradients"])
