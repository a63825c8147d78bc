import copy

import torch
from lesion_models.spectral import spectral_norm
from torch import nn


def test_spectral_norm_follows_torch_nn_utils_spectral_norm_step_by_step():
    """The published update order (v, then u) is that of ``torch.nn.utils.spectral_norm``, which
    SPADE uses; from the same vectors both give the same weights in every training step and in eval."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3)
    ours, reference = spectral_norm(copy.deepcopy(conv)), torch.nn.utils.spectral_norm(copy.deepcopy(conv))
    sn = ours.parametrizations.weight[0]
    sn._u.copy_(reference.weight_u), sn._v.copy_(reference.weight_v)
    x = torch.randn(2, 6, 7, 7)
    for _ in range(3):
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(sn._u, reference.weight_u, rtol=0, atol=1e-7)
    ours.eval(), reference.eval()
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(sn._u, reference.weight_u, rtol=0, atol=1e-7)
