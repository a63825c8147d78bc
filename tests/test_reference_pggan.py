"""PGGAN against facebookresearch/pytorch_GAN_zoo's PGAN, and our fused resampling against the separate layers.

``fixtures/reference/pggan.*`` (written by ``make_pggan.py`` there) holds the zoo's outputs, losses
and gradients after one training step at 16 px, stable and at two fades, with its weights in our
layout. Three of the zoo's conventions differ from the official TF code we follow and the test
undoes them: its fade alpha weights the lower-resolution path (ours ``1 - alpha``), its penalty mixes
``a * real + (1 - a) * fake`` (ours ``lerp(real, fake, u)``, ``u = 1 - a``), and its losses sum over
the batch where ours average (ours times the batch size). Its equalized-LR and minibatch-stddev
conventions are folded into the weight mapping by the script. Both sides compute in float64.
"""

import pytest
import torch
from lesion_metrics.losses import adversarial
from lesion_models import pggan
from lesion_models.pggan import PGGANConfig, PGGANDiscriminator, PGGANGenerator
from lesion_train.pggan import PGGANTrainConfig


def networks(tensors, config: PGGANConfig) -> tuple[PGGANGenerator, PGGANDiscriminator]:
    G, D = PGGANGenerator(config).double(), PGGANDiscriminator(config).double()
    for prefix, net in (("G", G), ("D", D)):
        state = {k[2:]: v for k, v in tensors.items() if k.startswith(f"{prefix}.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) == {"stage_log2", "stage_alpha"}
    return G, D


def training_step(G, D, reals, z_d, z_g, mix) -> dict[str, torch.Tensor]:
    """Outputs, losses and gradients of one D step and one G step, as ``lesion_train.pggan`` takes them."""
    options = PGGANTrainConfig()
    fakes = G(z_d)
    out = {"G_out": fakes.detach(), "D_real": D(reals)[0].detach(), "D_fake": D(fakes)[0].detach()}
    D.zero_grad()
    d_loss, terms = adversarial.wgan_gp_d_loss(
        D, reals, fakes, gp_lambda=options.gp_lambda, gp_target=options.gp_target, drift=options.drift, mix=mix
    )
    d_loss.backward()
    out.update({"D_loss": d_loss.detach(), **{f"term/{k}": v for k, v in terms.items()}})
    out.update({f"grad/D.{n}": p.grad.clone() for n, p in D.named_parameters() if p.grad is not None})
    G.zero_grad()
    D.requires_grad_(False)
    g_loss, _ = adversarial.wgan_g_loss(D, G(z_g))
    g_loss.backward()
    D.requires_grad_(True)
    out["G_loss"] = g_loss.detach()
    out.update({f"grad/G.{n}": p.grad.clone() for n, p in G.named_parameters() if p.grad is not None})
    return out


def inputs(tensors):
    return tuple(tensors[k].double() for k in ("reals", "z_d", "z_g"))


def as_zoo_losses(ours: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    """Our loss terms (batch means) as the zoo's ``optimizeParameters`` reports them (batch sums)."""
    options = PGGANTrainConfig()
    return {
        "lossD": ours["D_loss"] * batch,
        "lossD_real": -ours["term/D_real"] * batch,
        "lossD_fake": ours["term/D_fake"] * batch,
        "lossD_Grad": ours["term/D_gp"] * options.gp_lambda * batch,
        "lossD_Epsilon": options.drift * ours["D_real"].square().sum(),
        "lossG_fake": ours["G_loss"] * batch,
    }


@pytest.mark.parametrize("case", ["stable", "fade", "fade_quarter"])
def test_pggan_equals_pytorch_gan_zoo(case, reference_fixture, assert_parity, one_thread):
    tensors, meta = reference_fixture("pggan")
    tol, n = meta["tolerances"], meta["batch"]
    ref = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{case}/")}
    G, D = networks(tensors, PGGANConfig(**meta["ours"]))
    alpha = 1.0 - meta["cases"][case]["zoo_alpha"]
    G.set_stage(meta["ours"]["resolution"], alpha)
    D.set_stage(meta["ours"]["resolution"], alpha)
    ours = training_step(G, D, *inputs(tensors), mix=1.0 - ref["gp_mix"].double())

    for name in ("G_out", "D_real", "D_fake"):
        assert_parity(ours[name], ref[name], name, tol["outputs"])
    for name, value in as_zoo_losses(ours, n).items():
        assert_parity(value, ref[f"loss/{name}"], name, tol["losses"])
    # The same layers train (the zoo, like ours, leaves other stages' toRGB/fromRGB without gradients).
    assert {k for k in ours if k.startswith("grad/")} == {k for k in ref if k.startswith("grad/")}
    for name in (k for k in ref if k.startswith("grad/")):
        assert_parity(ours[name] * n, ref[name], name, tol["gradients"])


@pytest.mark.parametrize("case", ["stable", "fade"])
def test_fused_scale_equals_the_separate_layers(case, reference_fixture, assert_parity, one_thread, monkeypatch):
    """The official ``fused_scale=True`` blocks (``upscale2d_conv2d``, ``conv2d_downscale2d``: the 3x3
    kernel zero-padded to 5x5 and summed over its four 4x4 windows, times 1/4 in D, then a stride-2
    transposed convolution in G and a stride-2 convolution in D) against the separate layers
    ``conv(upscale(x))`` and ``bias + downscale(conv(x))`` on the same weights. Both run with D's bias
    and activation after the downscale; ``fused_scale=False`` puts them before, a different function
    (``packages/lesion-models/tests/test_pggan.py``)."""
    tensors, meta = reference_fixture("pggan")
    config = PGGANConfig(**{**meta["ours"], "fused_scale": True})
    G, D = networks(tensors, config)
    alpha = 1.0 - meta["cases"][case]["zoo_alpha"]
    G.set_stage(config.resolution, alpha)
    D.set_stage(config.resolution, alpha)
    mix = torch.linspace(0.1, 0.9, meta["batch"], dtype=torch.float64)
    runs = {}
    for form, smallest in (("stride2", 0), ("separate", 2**20)):  # every resampling layer in one form
        monkeypatch.setattr(pggan, "FUSED_UPSCALE_FROM", smallest)
        monkeypatch.setattr(pggan, "FUSED_DOWNSCALE_FROM", smallest)
        runs[form] = training_step(G, D, *inputs(tensors), mix=mix)
    assert runs["stride2"].keys() == runs["separate"].keys()
    for name, value in runs["separate"].items():
        assert_parity(runs["stride2"][name], value, name, 1e-10)
