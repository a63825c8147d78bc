"""LAPGAN's pyramid equals facebook/eyescream's, transcribed in NumPy from its Lua source.

The reference is Lua Torch and cannot run, so this file writes its equations with NumPy only
(docs/baselines.md, "LAPGAN level equations"):

- ``image.scale`` (bilinear mode, Torch's image package ``scaleLinear_rowcol``), eyescream's only
  resampling operator: shrinking averages the source samples under each destination sample (2x2
  blocks at a factor of two), enlarging interpolates linearly at source position
  ``d * (n - 1) / (m - 1)``; rows first, then columns. Our ``up`` deviates on purpose: it
  interpolates at ``(d + 1/2) / 2 - 1/2``, centred on the 2x2 blocks (docs/baselines.md), so the
  equations below use it (``upsample_centred``) wherever eyescream enlarges.
- ``datasets/coarse_to_fine_cifar10.lua``: a level of fine size ``f`` trains on
  ``fine = scale(I, f)``, ``coarse = scale(scale(I, f / 2), f)``, ``diff = fine - coarse``;
  the coarsest level (``scaled_cifar10.lua``) on ``scale(I, c)``.
- ``train/conditional_adversarial.lua``: noise ``uniform(-1, 1)``, one plane per level;
  G's input ``JoinTable{noise, coarse}``; a sample is ``coarse + G(...)``; D sees ``diff + coarse``
  (``CAddTable``).

The test compares our torch code (``lesion_models.lapgan`` and the training pairs of
``lesion_train.baselines.LAPGANRecipe``) with those equations on fixed inputs, in float64 (the
recipe in float32).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lesion_models.lapgan import (
    LAPGANConfig,
    LAPGANDiscriminator,
    LAPGANGenerator,
    down,
    laplacian_pyramid,
    reconstruct,
    uniform_noise,
    up,
)
from lesion_train import baselines

ATOL = 1e-10  # float64 on both sides


def scale_linear(src: np.ndarray, dst_len: int) -> np.ndarray:
    """Torch image's ``scaleLinear_rowcol`` along the last axis."""
    src_len = src.shape[-1]
    out = np.empty(src.shape[:-1] + (dst_len,))
    if dst_len > src_len:
        step = (src_len - 1) / (dst_len - 1)
        for di in range(dst_len - 1):
            si = di * step
            i, f = int(si), si - int(si)
            out[..., di] = (1 - f) * src[..., i] + f * src[..., i + 1]
        out[..., -1] = src[..., -1]
    elif dst_len < src_len:
        step = src_len / dst_len
        i0, f0 = 0, 0.0
        for di in range(dst_len):
            s1 = (di + 1) * step
            i1, f1 = int(s1), s1 - int(s1)
            acc, n = (1 - f0) * src[..., i0], 1 - f0
            for si in range(i0 + 1, i1):
                acc, n = acc + src[..., si], n + 1
            if i1 < src_len:
                acc, n = acc + f1 * src[..., i1], n + f1
            out[..., di] = acc / n
            i0, f0 = i1, f1
    else:
        out[...] = src
    return out


def image_scale(images: np.ndarray, size: int) -> np.ndarray:
    """``image.scale(img, size, size)``, bilinear: rows (width) first, then columns (height)."""
    rows = scale_linear(images, size)
    return scale_linear(rows.swapaxes(-1, -2), size).swapaxes(-1, -2)


def upsample_centred(images: np.ndarray) -> np.ndarray:
    """Ours: linear interpolation at source position ``(d + 1/2) / 2 - 1/2``, clamped to the image,
    along rows and then columns."""

    def along_last(src):
        n = src.shape[-1]
        position = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        i0 = np.floor(position).astype(int)
        i1, f = np.minimum(i0 + 1, n - 1), position - i0
        return (1 - f) * src[..., i0] + f * src[..., i1]

    return along_last(along_last(images).swapaxes(-1, -2)).swapaxes(-1, -2)


def uniform(z: np.ndarray) -> np.ndarray:
    """U(-1, 1) from N(0, 1) by the probability integral transform ``2 Phi(z) - 1``."""
    phi = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return 2 * phi - 1


def conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Torch's ``SpatialConvolution`` (a correlation), stride 1, zero padding ``(k - 1) / 2``; that is
    eyescream's ``SpatialConvolutionUpsample`` with factor 1."""
    p = (w.shape[-1] - 1) // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, w.shape[-2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


def eyescream_level_generator(layers: list[tuple[np.ndarray, np.ndarray]], noise: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """``JoinTable{noise, coarse}`` -> convolutions with ReLU between them -> the residual."""
    x = np.concatenate([noise, coarse], axis=1)
    for index, (w, b) in enumerate(layers):
        x = conv_same(x, w, b)
        if index < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def level_weights_in_eyescream_layout(level: torch.nn.Sequential, channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The weight mapping: our first convolution reads ``[coarse, noise]``, eyescream's
    ``[noise, coarse]``; the other layers are the same."""
    convs = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in level if isinstance(m, torch.nn.Conv2d)]
    w, b = convs[0]
    return [(np.concatenate([w[:, channels:], w[:, :channels]], axis=1), b)] + convs[1:]


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 32, 32))


def test_down_is_torch_image_scale_and_up_is_centred(images):
    x = torch.from_numpy(images)
    np.testing.assert_allclose(down(x).numpy(), image_scale(images, 16), rtol=0, atol=ATOL)
    np.testing.assert_allclose(up(x).numpy(), upsample_centred(images), rtol=0, atol=ATOL)
    small = images[..., :8, :8].copy()
    np.testing.assert_allclose(up(torch.from_numpy(small)).numpy(), upsample_centred(small), rtol=0, atol=ATOL)


def test_up_differs_from_eyescream_only_in_its_sample_positions():
    """The documented deviation, exactly: on an image whose value is its column index, an enlarged
    row shows where each operator samples the source."""
    n = 8
    columns = np.broadcast_to(np.arange(n, dtype=float), (1, 1, n, n)).copy()
    j = np.arange(2 * n)
    np.testing.assert_allclose(image_scale(columns, 2 * n)[0, 0, 0], j * (n - 1) / (2 * n - 1), rtol=0, atol=ATOL)
    np.testing.assert_allclose(up(torch.from_numpy(columns)).numpy()[0, 0, 0], np.clip((j + 0.5) / 2 - 0.5, 0, n - 1),
                               rtol=0, atol=ATOL)


def test_laplacian_pyramid_and_reconstruction_match_eyescream(images):
    coarsest, residuals = laplacian_pyramid(torch.from_numpy(images), 2)
    # eyescream scales every level straight from the full image; ours halves repeatedly.
    np.testing.assert_allclose(coarsest.numpy(), image_scale(images, 8), rtol=0, atol=ATOL)
    for residual, size in zip(residuals, (16, 32), strict=True):
        fine, coarse = image_scale(images, size), upsample_centred(image_scale(images, size // 2))
        np.testing.assert_allclose(residual.numpy(), fine - coarse, rtol=0, atol=ATOL)
    # Exact reconstruction, ours and the equations' ``coarse + diff``.
    np.testing.assert_allclose(reconstruct(coarsest, residuals).numpy(), images, rtol=0, atol=ATOL)
    image = coarsest.numpy()
    for residual in residuals:
        image = upsample_centred(image) + residual.numpy()
    np.testing.assert_allclose(image, images, rtol=0, atol=ATOL)
    floats = torch.from_numpy(images).float()
    assert (reconstruct(*laplacian_pyramid(floats, 2)) - floats).abs().max() < 1e-6


def test_noise_planes_are_uniform_minus_one_to_one():
    z = np.random.default_rng(1).standard_normal(200_000)
    ours = uniform_noise(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(ours, uniform(z), rtol=0, atol=1e-12)
    # The distribution of eyescream's ``uniform(-1, 1)``: quantiles within sampling error.
    quantiles = np.quantile(ours, np.linspace(0.01, 0.99, 99))
    np.testing.assert_allclose(quantiles, np.linspace(-0.98, 0.98, 99), rtol=0, atol=0.01)


def test_generator_combines_as_eyescream():
    """Sample = upsampled coarser sample + level G(noise plane, upsampled coarser sample), level by level."""
    torch.manual_seed(0)
    config = LAPGANConfig(resolution=16, coarse_resolution=4, coarse_z_dim=5, coarse_g_hidden=6, level_g_features=4)
    G = LAPGANGenerator(config).double().train()
    z = np.random.default_rng(2).standard_normal((2, G.z_dim))
    ours = G(torch.from_numpy(z)).detach().numpy()

    code, n = z[:, : config.coarse_z_dim], z.shape[0]
    # The coarse network is ours (tanh output, ReLU after both hidden layers: documented deviations).
    w = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in G.coarse_net if isinstance(m, torch.nn.Linear)]
    hidden = np.maximum(uniform(code) @ w[0][0].T + w[0][1], 0)
    hidden = np.maximum(hidden @ w[1][0].T + w[1][1], 0)
    image = np.tanh(hidden @ w[2][0].T + w[2][1]).reshape(n, config.channels, 4, 4)
    offset = config.coarse_z_dim
    for level, size in enumerate(config.level_resolutions):
        plane = z[:, offset : offset + size * size].reshape(n, 1, size, size)
        offset += size * size
        coarse = upsample_centred(image)
        layers = level_weights_in_eyescream_layout(G.levels[level], config.channels)
        image = coarse + eyescream_level_generator(layers, uniform(plane), coarse)
    assert offset == G.z_dim
    np.testing.assert_allclose(ours, image, rtol=0, atol=ATOL)
    # Eval mode only adds the clamp to the data range.
    np.testing.assert_allclose(G.eval()(torch.from_numpy(z)).detach().numpy(), np.clip(image, -1, 1), rtol=0, atol=ATOL)


def test_training_pairs_match_eyescream(one_thread, images):
    """The recipe's level inputs: D judges ``diff + coarse`` (eyescream's ``CAddTable``; ours also
    passes the condition ``coarse`` beside it), G is conditioned on ``coarse`` and its fake is
    ``coarse`` + its output, the coarse GAN sees ``scale(I, 8)``."""
    config = baselines.preset("lapgan", "cpu", z_dim=8, coarse_g_hidden=16, coarse_d_hidden=16,
                              level_g_features=4, level_d_features=4)
    # ``critics`` needs only G and D; a whole recipe also builds optimisers, whose first
    # construction in a process imports torch._dynamo (seconds).
    network = config.network_config()
    recipe = SimpleNamespace(G=LAPGANGenerator(network), D=LAPGANDiscriminator(network).eval())  # eval: no dropout
    c, atol = recipe.G.config.channels, 1e-5  # the recipe runs in float32

    def record(net, inputs):
        return [net.levels[k][0].register_forward_pre_hook(lambda m, args, k=k: inputs.setdefault(k, []).append(args[0].detach()))
                for k in range(len(net.levels))]

    g_inputs, d_inputs = {}, {}
    hooks = record(recipe.G, g_inputs) + record(recipe.D, d_inputs)
    critics = baselines.LAPGANRecipe.critics(recipe, torch.from_numpy(images).float())
    for critic, real, fake in critics[1:]:
        critic(real), critic(fake)
    for hook in hooks:
        hook.remove()

    np.testing.assert_allclose(critics[0][1].numpy(), image_scale(images, 8), rtol=0, atol=atol)
    for level, (_, real, fake) in enumerate(critics[1:]):
        size = real.shape[-1]
        fine, coarse = image_scale(images, size), upsample_centred(image_scale(images, size // 2))
        (g_input,), (d_real, d_fake) = g_inputs[level], d_inputs[level]
        np.testing.assert_allclose(g_input[:, :c].numpy(), coarse, rtol=0, atol=atol)
        assert g_input.shape[1] == c + 1 and g_input[:, c].abs().max() < 1  # one uniform noise plane
        residual = recipe.G.levels[level](g_input).detach().numpy()
        np.testing.assert_allclose(fake.detach().numpy(), coarse + residual, rtol=0, atol=atol)
        np.testing.assert_allclose(d_real[:, :c].numpy(), fine, rtol=0, atol=atol)  # diff + coarse
        for seen in (d_real, d_fake):
            np.testing.assert_allclose(seen[:, c:].numpy(), coarse, rtol=0, atol=atol)
