"""Speed options of the PGGAN step give the same step as the plain path (float tolerance)."""

import dataclasses

import lesion_models.pggan
import torch
from lesion_train import pggan
from lesion_train.distributed import DistEnv


def _one_step(resolution=8, **options):
    config = pggan.preset("cpu", resolution=resolution, fmap_base=64, fmap_max=16, z_dim=16, **options)
    torch.manual_seed(0)
    recipe = pggan.PGGANRecipe(config, 0, DistEnv())
    phase = dataclasses.replace(recipe.phase(10**9), batch_size=8)
    recipe.enter_phase(phase)
    images = torch.rand(8, 3, resolution, resolution, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for _ in range(2):  # the second step sees Adam's moments
        terms = recipe.train_step({"images": images}, phase)
    return terms, {name: model.state_dict() for name, model in recipe.models.items()}


def test_fused_adam_and_channels_last_match_the_plain_step():
    torch.set_num_threads(1)
    plain_terms, plain = _one_step(fused_adam=False, channels_last=False)
    for options in ({"fused_adam": True, "channels_last": False}, {"fused_adam": True, "channels_last": True}):
        terms, states = _one_step(**options)
        for name, value in plain_terms.items():
            torch.testing.assert_close(terms[name], value, rtol=1e-4, atol=1e-5)
        for model, state in plain.items():
            for key, value in state.items():
                torch.testing.assert_close(states[model][key], value, rtol=1e-4, atol=1e-5, msg=f"{model}.{key}")


def test_strided_resampling_convolutions_give_the_plain_step(monkeypatch):
    """At 32 px G's last and D's last two resampling convolutions take the stride-2 form."""
    torch.set_num_threads(1)
    strided_terms, strided = _one_step(resolution=32)
    monkeypatch.setattr(lesion_models.pggan, "FUSED_UPSCALE_FROM", 10**9)
    monkeypatch.setattr(lesion_models.pggan, "FUSED_DOWNSCALE_FROM", 10**9)
    plain_terms, plain = _one_step(resolution=32)
    for name, value in plain_terms.items():
        torch.testing.assert_close(strided_terms[name], value, rtol=1e-4, atol=1e-5)
    for model, state in plain.items():
        for key, value in state.items():
            torch.testing.assert_close(strided[model][key], value, rtol=1e-4, atol=1e-5, msg=f"{model}.{key}")



def test_fused_scale_option_reaches_the_networks():
    for fused in (True, False):
        config = pggan.preset("cpu", resolution=16, fmap_base=64, fmap_max=16, z_dim=16, fused_scale=fused)
        assert pggan.PGGANRecipe(config, 0, DistEnv()).D.config.fused_scale is fused
