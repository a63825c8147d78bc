"""SPADE generator, discriminator, hinge loss and feature matching against NVlabs/SPADE.

The fixture (``tests/fixtures/reference/make_spade.py``) holds the reference's weights in our
layout, including the spectral-norm power-iteration vectors ``u``/``v`` and the batch-norm
statistics, and what the reference computed from them in one generator step and one discriminator
step of its ``Pix2PixModel``. Both networks run in training mode, so every forward does one
power iteration and batch norm uses batch statistics; the calls below follow the reference's order
(G; D on fake and real in one batch; G again without gradients; D again), so the power iterations
start from the same vectors.
"""

import torch
from lesion_metrics.losses import translation as losses
from lesion_models.pix2pixhd import MultiscaleDiscriminator
from lesion_models.spade import SPADEGenerator, SPADEGeneratorConfig, spade_discriminator_config
from lesion_train.mask2image import ARCH_SPECS

OUTPUT_RTOL, GRAD_RTOL = 1e-5, 1e-4
KINDS = ("out", "loss", "grad", "after")


def _state(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def build(g: dict, d: dict) -> tuple[SPADEGenerator, MultiscaleDiscriminator]:
    """Our SPADE networks through the factories the trainer uses, at the given widths."""
    G = SPADEGenerator(SPADEGeneratorConfig(label_nc=g["label_nc"], nf=g["nf"], hidden=g["hidden"]))
    return G, MultiscaleDiscriminator(spade_discriminator_config(d["input_nc"], ndf=d["ndf"]))


def _discriminate(D, seg, fake, real):
    """SPADE's ``discriminate``: fake and real in one batch, split per feature."""
    out = D(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
    n = seg.shape[0]
    return [[f[:n] for f in scale] for scale in out], [[f[n:] for f in scale] for scale in out], out


def run_ours(tensors: dict, meta: dict) -> dict[str, torch.Tensor]:
    """Our networks and losses through the reference's generator step and discriminator step,
    keyed as the fixture stores the reference's results."""
    G, D = build(meta["ours"]["G"], meta["ours"]["D"])
    G.load_state_dict(_state(tensors, "G.")), D.load_state_dict(_state(tensors, "D."))
    G.train(), D.train()
    arch = ARCH_SPECS["spade"].defaults
    seg, real = tensors["input.semantics"].float(), tensors["input.image"]
    out = {}

    fake = G(seg)
    pred_fake, pred_real, both = _discriminate(D, seg, fake, real)
    g_gan = losses.gan_loss(pred_fake, True, arch.gan_mode, for_discriminator=False, scales=arch.scales)
    g_feat = losses.feature_matching_loss(pred_fake, pred_real, arch.lambda_feat, arch.layer_weight)
    (g_gan + g_feat).backward()
    out.update({"out.fake": fake.detach(), "loss.G_GAN": g_gan.detach(), "loss.G_feat": g_feat.detach()})
    out.update({f"out.D_g.{s}.{i}": f.detach() for s, scale in enumerate(both) for i, f in enumerate(scale)})
    out.update({f"grad.G.{k}": p.grad for k, p in G.named_parameters()})

    D.zero_grad()
    with torch.no_grad():
        fake_d = G(seg)
    pred_fake, pred_real, both = _discriminate(D, seg, fake_d, real)
    d_fake = losses.gan_loss(pred_fake, False, arch.gan_mode, scales=arch.scales)
    d_real = losses.gan_loss(pred_real, True, arch.gan_mode, scales=arch.scales)
    (arch.d_loss_scale * (d_fake + d_real)).backward()
    out.update({"loss.D_fake": d_fake.detach(), "loss.D_real": d_real.detach()})
    out.update({f"out.D_d.{s}": scale[-1].detach() for s, scale in enumerate(both)})
    out.update({f"grad.D.{k}": p.grad for k, p in D.named_parameters()})
    # Power-iteration vectors and batch-norm statistics after the two steps.
    out.update({f"after.G.{k}": v for k, v in G.state_dict().items() if k in meta["buffers"]["G"]})
    out.update({f"after.D.{k}": v for k, v in D.state_dict().items() if k in meta["buffers"]["D"]})
    return out


def expected(tensors: dict) -> dict[str, torch.Tensor]:
    """The reference's results, outputs first so that a failure names the earliest divergence."""
    return {k: v for kind in KINDS for k, v in tensors.items() if k.split(".")[0] == kind}


def test_spade_matches_reference(reference_fixture, assert_parity, one_thread):
    tensors, meta = reference_fixture("spade")
    ours, reference = run_ours(tensors, meta), expected(tensors)
    assert sorted(ours) == sorted(reference), "our parameters and outputs do not pair with the reference's"
    for name, value in reference.items():
        assert_parity(ours[name], value, name, GRAD_RTOL if name.startswith("grad.") else OUTPUT_RTOL)


def test_spade_defaults_match_reference(reference_fixture):
    """The fixture narrows SPADE's hard-coded 128-channel modulation MLP; our default keeps 128."""
    _, meta = reference_fixture("spade")
    assert SPADEGeneratorConfig().hidden == meta["reference"]["spade_hidden"]


def test_spade_init_matches_reference(reference_fixture, one_thread):
    """Weights are transplanted above; here our own initialisation must have the spread of SPADE's
    (xavier normal, gain 0.02, for G and D) at the recorded widths."""
    _, meta = reference_fixture("spade")
    torch.manual_seed(0)
    G, D = build({**meta["ours"]["G"], "hidden": 128, **meta["init"]["G"]}, {**meta["ours"]["D"], **meta["init"]["D"]})
    ours = {f"G.{k}": v for k, v in G.state_dict().items()} | {f"D.{k}": v for k, v in D.state_dict().items()}
    for name, std in meta["init"]["std"].items():
        assert 0.85 < ours[name].std().item() / std < 1.15, f"{name}: std {ours[name].std():.3g}, SPADE's {std:.3g}"
