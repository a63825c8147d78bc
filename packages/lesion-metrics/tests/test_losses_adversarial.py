import pytest
import torch
from lesion_metrics.losses import adversarial as adv


class LinearCritic(torch.nn.Module):
    """scores = sum(w * x): its input gradient is w everywhere, so the penalties are known."""

    def __init__(self, shape, num_classes=0, dtype=torch.float32):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape, dtype=dtype))
        self.head = torch.nn.Linear(int(torch.tensor(shape).prod()), num_classes, dtype=dtype) if num_classes else None

    def forward(self, x):
        scores = (x * self.w).flatten(1).sum(1)
        return scores, (self.head(x.flatten(1)) if self.head is not None else None)


class SquareCritic(torch.nn.Module):
    """A non-linear critic (its penalty depends on the input) for gradcheck."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        return (torch.tanh(x * self.w)).flatten(1).sum(1) + (x.square() * self.w).flatten(1).sum(1), None


def test_gradient_penalty_matches_closed_form():
    torch.manual_seed(0)
    critic = LinearCritic((3, 4, 4))
    reals, fakes = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    penalty = adv.gradient_penalty(critic, reals, fakes, target=1.0)
    expected = (critic.w.detach().norm() - 1.0) ** 2
    torch.testing.assert_close(penalty, expected.expand(5))


def test_gradient_penalty_gradcheck():
    torch.manual_seed(0)
    reals = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    fakes = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    mix = torch.rand(3, dtype=torch.float64)

    def penalty_of(w):
        return adv.gradient_penalty(SquareCritic(w), reals, fakes, target=1.0, mix=mix)

    w = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(penalty_of, (w,))

    def r1_of(w):
        x = reals.clone().requires_grad_(True)
        return adv.r1_penalty(SquareCritic(w)(x)[0], x)

    assert torch.autograd.gradcheck(r1_of, (w,))


def test_wgan_gp_d_loss_official_terms():
    torch.manual_seed(0)
    critic = LinearCritic((3, 4, 4))
    reals, fakes = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    loss, terms = adv.wgan_gp_d_loss(critic, reals, fakes)
    rs, fs = critic(reals)[0], critic(fakes)[0]
    gp = (critic.w.norm() - 1) ** 2
    expected = (fs - rs + 10.0 * gp + 0.001 * rs**2).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(terms["D_gp"], gp.detach())
    loss.backward()
    assert critic.w.grad is not None
    # target != 1 rescales lambda by 1/target^2, as in the official loss.
    loss2, terms2 = adv.wgan_gp_d_loss(critic, reals, fakes, gp_target=2.0, drift=0.0)
    expected2 = (fs - rs).mean() + 10.0 / 4 * (critic.w.norm() - 2) ** 2
    torch.testing.assert_close(loss2, expected2)


def test_wgan_losses_with_auxiliary_classifier():
    torch.manual_seed(0)
    critic = LinearCritic((3, 2, 2), num_classes=3)
    reals, fakes = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1])
    loss, terms = adv.wgan_gp_d_loss(critic, reals, fakes, labels)
    ce = torch.nn.functional.cross_entropy
    rs, rl = critic(reals)
    fs, fl = critic(fakes)
    gp = (critic.w.norm() - 1) ** 2
    expected = (fs - rs).mean() + 10 * gp + 0.001 * (rs**2).mean() + ce(rl, labels) + ce(fl, labels)
    torch.testing.assert_close(loss, expected)
    assert set(terms) >= {"D_aux_real", "D_aux_fake", "D_real", "D_fake", "D_gp", "D_loss"}
    loss.backward()
    assert fakes.grad is None  # D's loss never reaches G
    g_loss, g_terms = adv.wgan_g_loss(critic, fakes, labels)
    torch.testing.assert_close(g_loss, -fs.mean() + ce(fl, labels))
    g_loss.backward()
    assert fakes.grad is not None and fakes.grad.abs().sum() > 0


def test_logistic_losses_and_r1():
    torch.manual_seed(0)
    critic = LinearCritic((3, 2, 2))
    reals, fakes = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    loss, terms = adv.logistic_d_loss(critic, reals, fakes, r1_gamma=10.0)
    sp = torch.nn.functional.softplus
    rs, fs = critic(reals)[0], critic(fakes)[0]
    r1 = critic.w.square().sum()
    torch.testing.assert_close(loss, (sp(fs) + sp(-rs)).mean() + 5.0 * r1)
    torch.testing.assert_close(terms["D_r1"], r1.detach())
    g_loss, _ = adv.logistic_g_loss(critic, fakes)
    torch.testing.assert_close(g_loss, sp(-fs).mean())


@pytest.mark.parametrize("grad_scale", [1.0, 1024.0])
def test_grad_scale_is_divided_out(grad_scale):
    torch.manual_seed(0)
    critic = LinearCritic((3, 2, 2))
    reals, fakes = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    penalty = adv.gradient_penalty(critic, reals, fakes, grad_scale=grad_scale)
    torch.testing.assert_close(penalty, ((critic.w.norm() - 1) ** 2).detach().expand(4))
