"""pix2pix U-Net generator, 70x70 PatchGAN, BCE GAN loss and L1 against
junyanz/pytorch-CycleGAN-and-pix2pix.

The fixture (``tests/fixtures/reference/make_pix2pix.py``) holds the reference's weights in our
layout and what its ``Pix2PixModel`` computed from them: ``forward``, ``backward_D`` (D on the
detached fake, then on the real pair, loss halved) and ``backward_G`` (GAN + 100 L1), with no
optimizer step in between. Batch norm runs in training mode (batch statistics; the running
statistics after the three D calls are compared too); dropout runs in eval mode, where it is the
identity, so that the comparison needs no random numbers.
"""

import torch
from lesion_metrics.losses import translation as losses
from lesion_train.mask2image import ARCH_SPECS, Mask2ImageConfig, build_networks
from torch import nn

OUTPUT_RTOL, GRAD_RTOL = 1e-5, 1e-4
KINDS = ("out", "loss", "grad", "after")


def _state(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def build(tensors: dict, meta: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our networks as the trainer builds them for ``--arch pix2pix`` at the fixture's widths, with
    the fixture's weights; training mode with dropout off."""
    G, D = build_networks(Mask2ImageConfig(**meta["ours"]["trainer"]), meta["ours"]["num_classes"])
    G.load_state_dict(_state(tensors, "G.")), D.load_state_dict(_state(tensors, "D."))
    G.train(), D.train()
    for m in G.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return G, D


def run_ours(tensors: dict, meta: dict) -> dict[str, torch.Tensor]:
    """Our networks and losses, as our trainer calls them, in the reference's order of calls."""
    G, D = build(tensors, meta)
    arch = ARCH_SPECS["pix2pix"].defaults
    label, real = tensors["input.label"].float(), tensors["input.image"]
    out = {}

    fake = G(label)
    pred_fake = D(torch.cat([label, fake], 1).detach())
    pred_real = D(torch.cat([label, real], 1))
    d_fake = losses.gan_loss(pred_fake, False, arch.gan_mode, scales=arch.scales)
    d_real = losses.gan_loss(pred_real, True, arch.gan_mode, scales=arch.scales)
    (arch.d_loss_scale * (d_fake + d_real)).backward()
    out.update({"out.D_fake": pred_fake[0][-1].detach(), "out.D_real": pred_real[0][-1].detach(),
                "loss.D_fake": d_fake.detach(), "loss.D_real": d_real.detach()})
    out.update({f"grad.D.{k}": p.grad for k, p in D.named_parameters()})

    D.requires_grad_(False)
    pred = D(torch.cat([label, fake], 1))
    g_gan = losses.gan_loss(pred, True, arch.gan_mode, for_discriminator=False, scales=arch.scales)
    g_l1 = arch.lambda_l1 * nn.functional.l1_loss(fake, real)
    (g_gan + g_l1).backward()
    out.update({"out.fake": fake.detach(), "loss.G_GAN": g_gan.detach(), "loss.G_L1": g_l1.detach()})
    out.update({f"out.D_g.{i}": f.detach() for i, f in enumerate(pred[0])})
    out.update({f"grad.G.{k}": p.grad for k, p in G.named_parameters()})
    # Batch-norm running statistics after one G and three D forwards.
    out.update({f"after.G.{k}": v for k, v in G.state_dict().items() if k in meta["buffers"]["G"]})
    out.update({f"after.D.{k}": v for k, v in D.state_dict().items() if k in meta["buffers"]["D"]})
    return out


def expected(tensors: dict) -> dict[str, torch.Tensor]:
    """The reference's results, outputs first so that a failure names the earliest divergence."""
    return {k: v for kind in KINDS for k, v in tensors.items() if k.split(".")[0] == kind}


def test_pix2pix_matches_reference(reference_fixture, assert_parity, one_thread):
    tensors, meta = reference_fixture("pix2pix")
    ours, reference = run_ours(tensors, meta), expected(tensors)
    assert sorted(ours) == sorted(reference), "our parameters and outputs do not pair with the reference's"
    for name, value in reference.items():
        assert_parity(ours[name], value, name, GRAD_RTOL if name.startswith("grad.") else OUTPUT_RTOL)
