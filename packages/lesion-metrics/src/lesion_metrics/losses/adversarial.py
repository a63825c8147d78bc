"""Adversarial losses with the official PGGAN defaults, plus the logistic/R1 alternative.

A *critic* is any callable ``critic(images) -> (scores (N,), class_logits (N, K) or None)``
(``PGGANDiscriminator`` is one). Every loss returns ``(loss, terms)``: the scalar to minimise
(mean over the batch) and a dict of detached scalar tensors for logging, so callers sync once per
tick rather than per term.

WGAN-GP as in tkarras/progressive_growing_of_gans ``loss.py``: D minimises
``D(fake) - D(real) + lambda / target**2 * (|grad D(mix)| - target)**2 + epsilon * D(real)**2``
with ``lambda=10, target=1, epsilon=0.001``, ``mix`` a per-sample uniform blend of real and fake;
when conditional both networks add ``cond_weight`` (1.0) times the softmax cross entropy of the
auxiliary classifier (D on reals and fakes, G on fakes), the official AC-GAN term.

Non-saturating logistic (Goodfellow et al. 2014) with the R1 penalty ``gamma/2 |grad D(real)|^2``
(Mescheder et al. 2018), gamma 10, as the alternative for users who prefer it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Critic = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]

__all__ = [
    "gradient_penalty",
    "r1_penalty",
    "auxiliary_classification",
    "wgan_gp_d_loss",
    "wgan_g_loss",
    "logistic_d_loss",
    "logistic_g_loss",
]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 or wider: losses of half-precision (AMP) scores in float32, float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _input_gradients(scores: torch.Tensor, inputs: torch.Tensor, grad_scale: float) -> torch.Tensor:
    """d sum(scores) / d inputs, kept in the graph so the penalty trains D.

    ``grad_scale`` > 1 scales the scores before differentiating (fp16 loss scaling keeps small
    gradients from flushing to zero) and is divided out afterwards.
    """
    scores = _wide(scores)
    (grads,) = torch.autograd.grad(scores.sum() * grad_scale, inputs, create_graph=True)
    return grads.to(scores.dtype) / grad_scale


def gradient_penalty(
    critic: Critic,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    target: float = 1.0,
    mix: torch.Tensor | None = None,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """Per-sample ``(|grad critic(mix)|_2 - target)^2`` at ``mix = reals + u (fakes - reals)``.

    ``mix`` (N,) overrides the uniform draw of ``u`` (to replay a reference's draw in tests)."""
    if mix is None:
        mix = torch.rand(reals.shape[0], 1, 1, 1, device=reals.device, dtype=reals.dtype)
    else:
        mix = mix.reshape(-1, 1, 1, 1).to(reals)
    # Under autocast the fakes may be half precision; blend in the reals' precision.
    mixed = torch.lerp(reals.detach(), fakes.detach().to(reals.dtype), mix).requires_grad_(True)
    scores, _ = critic(mixed)
    grads = _input_gradients(scores, mixed, grad_scale)
    norms = grads.flatten(1).square().sum(dim=1).sqrt()
    return (norms - target).square()


def r1_penalty(critic_scores: torch.Tensor, reals: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """Per-sample ``|grad critic(reals)|^2``; ``reals`` must have been passed with requires_grad."""
    grads = _input_gradients(critic_scores, reals, grad_scale)
    return grads.flatten(1).square().sum(dim=1)


def auxiliary_classification(logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Per-sample softmax cross entropy of the critic's class head (None when unconditional)."""
    if logits is None or labels is None:
        return None
    return F.cross_entropy(_wide(logits), labels.long(), reduction="none")


def _finish(loss, terms, name, labels, cond_weight, **logits):
    """Add the AC-GAN terms (``logits`` by term name), average, and log the total as ``name``."""
    for term, values in logits.items():
        aux = auxiliary_classification(values, labels)
        if aux is not None:
            loss = loss + cond_weight * aux
            terms[term] = aux.detach().mean()
    loss = loss.mean()
    terms[name] = loss.detach()
    return loss, terms


def wgan_gp_d_loss(
    critic: Critic,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    labels: torch.Tensor | None = None,
    gp_lambda: float = 10.0,
    gp_target: float = 1.0,
    drift: float = 0.001,
    cond_weight: float = 1.0,
    grad_scale: float = 1.0,
    mix: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official ``D_wgangp_acgan``. ``fakes`` are detached (G gets no gradient); ``mix``
    (N,) fixes the penalty's blend weights (see ``gradient_penalty``)."""
    fakes = fakes.detach()
    real_scores, real_logits = critic(reals)
    fake_scores, fake_logits = critic(fakes)
    real_scores, fake_scores = _wide(real_scores), _wide(fake_scores)
    penalty = gradient_penalty(critic, reals, fakes, target=gp_target, mix=mix, grad_scale=grad_scale)
    loss = fake_scores - real_scores + penalty * (gp_lambda / gp_target**2) + drift * real_scores.square()
    terms = {
        "D_real": real_scores.detach().mean(),
        "D_fake": fake_scores.detach().mean(),
        "D_gp": penalty.detach().mean(),
    }
    return _finish(loss, terms, "D_loss", labels, cond_weight, D_aux_real=real_logits, D_aux_fake=fake_logits)


def wgan_g_loss(
    critic: Critic, fakes: torch.Tensor, labels: torch.Tensor | None = None, cond_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official ``G_wgan_acgan``: ``-D(fake)`` plus the AC-GAN term on fakes."""
    scores, logits = critic(fakes)
    loss = -_wide(scores)
    return _finish(loss, {}, "G_loss", labels, cond_weight, G_aux=logits)


def logistic_d_loss(
    critic: Critic,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    labels: torch.Tensor | None = None,
    r1_gamma: float = 10.0,
    cond_weight: float = 1.0,
    grad_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``softplus(D(fake)) + softplus(-D(real)) + gamma/2 |grad D(real)|^2`` (+ AC-GAN term)."""
    reals = reals.detach().requires_grad_(r1_gamma > 0)
    real_scores, real_logits = critic(reals)
    fake_scores, fake_logits = critic(fakes.detach())
    real_scores, fake_scores = _wide(real_scores), _wide(fake_scores)
    loss = F.softplus(fake_scores) + F.softplus(-real_scores)
    terms = {"D_real": real_scores.detach().mean(), "D_fake": fake_scores.detach().mean()}
    if r1_gamma > 0:
        penalty = r1_penalty(real_scores, reals, grad_scale)
        loss = loss + penalty * (r1_gamma / 2)
        terms["D_r1"] = penalty.detach().mean()
    return _finish(loss, terms, "D_loss", labels, cond_weight, D_aux_real=real_logits, D_aux_fake=fake_logits)


def logistic_g_loss(
    critic: Critic, fakes: torch.Tensor, labels: torch.Tensor | None = None, cond_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Non-saturating ``softplus(-D(fake))`` (+ AC-GAN term)."""
    scores, logits = critic(fakes)
    loss = F.softplus(-_wide(scores))
    return _finish(loss, {}, "G_loss", labels, cond_weight, G_aux=logits)
