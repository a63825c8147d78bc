"""Spectral normalisation (Miyato et al. 2018) with the published update order.

``W / sigma(W)`` with ``sigma`` estimated by one power iteration per training-mode forward:
``v <- W^T u / |W^T u|``, ``u <- W v / |W v|``, ``sigma = u^T W v`` (the paper's Algorithm 1, and
``torch.nn.utils.spectral_norm``, which SPADE uses). ``torch.nn.utils.parametrizations.spectral_norm``
updates ``u`` first and ``v`` second, so from the same vectors it estimates a different ``sigma``
(1 to 7% apart for random weights of 256 to 16 rows and random vectors; the gap shrinks as the
vectors converge over training); this one reproduces SPADE's numbers. The vectors start random
(no warm-up iterations, as in the reference) and are stored as the buffers ``_u``/``_v`` of
``parametrizations.weight.0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class _SpectralNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        rows, cols = weight.shape[0], weight[0].numel()
        self.register_buffer("_u", F.normalize(weight.new_empty(rows).normal_(), dim=0, eps=eps))
        self.register_buffer("_v", F.normalize(weight.new_empty(cols).normal_(), dim=0, eps=eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.flatten(1)
        if self.training:
            with torch.no_grad():
                F.normalize(torch.mv(matrix.t(), self._u), dim=0, eps=self.eps, out=self._v)
                F.normalize(torch.mv(matrix, self._v), dim=0, eps=self.eps, out=self._u)
        # Clones: the in-place update of the next forward must not alter this graph's vectors.
        u, v = self._u.clone(), self._v.clone()
        return weight / torch.dot(u, torch.mv(matrix, v))

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalise ``module.weight`` (a conv's output channels are the rows)."""
    parametrize.register_parametrization(module, "weight", _SpectralNorm(module.weight.detach()))
    return module
