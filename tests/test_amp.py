"""Mixed precision through the trainers' own step (``--amp fp16|bf16``): one real step on the CPU, the
networks' convolutions run in the half dtype, fp16 goes through the gradient scaler, and losses
and updated weights stay finite. Skipped, with the reason, where torch's CPU autocast lacks the dtype."""

import pytest
import torch
import torch.nn.functional as F
from lesion_train import baselines, mask2image, pggan, setup
from lesion_train.distributed import DistEnv
from torch.overrides import TorchFunctionMode

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
INITIAL_SCALE = torch.amp.GradScaler("cpu").get_scale()


def _skip_unless_cpu_autocast(amp: str) -> None:
    x, w = torch.ones(2, 4), torch.ones(3, 4)
    try:
        with torch.autocast("cpu", dtype=DTYPES[amp]):
            y = torch.nn.functional.linear(x, w)
    except RuntimeError as error:
        pytest.skip(f"torch {torch.__version__}: CPU autocast has no {amp} ({error})")
    if y.dtype != DTYPES[amp]:
        pytest.skip(f"torch {torch.__version__}: CPU autocast leaves {amp} matmuls in {y.dtype}")


class _ConvDtypes(TorchFunctionMode):
    """The dtypes every convolution of the step computes in."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (F.conv2d, F.conv_transpose2d):
            self.dtypes.add(out.dtype)
        return out


def _one_step(recipe, batch, phase, amp):
    before = [p.detach().clone() for p in recipe.G.parameters()]
    recipe.enter_phase(phase)
    with _ConvDtypes() as convs:
        terms = recipe.train_step(batch, phase)
    assert convs.dtypes == {DTYPES[amp]}
    assert all(bool(torch.isfinite(v).all()) for v in terms.values()), terms
    after = list(recipe.G.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in after)
    updated = any(not torch.equal(a, b) for a, b in zip(before, after))
    assert recipe.scaler_g.is_enabled() == (amp == "fp16") and recipe.scaler_d.is_enabled() == (amp == "fp16")
    if amp == "fp16":
        # The scaler either applied the update or, on an fp16 overflow, skipped it and halved its scale.
        assert updated or recipe.scaler_g.get_scale() < INITIAL_SCALE
    else:
        assert updated
    return terms


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_pggan_step(amp):
    _skip_unless_cpu_autocast(amp)
    torch.manual_seed(0)
    config = pggan.preset("cpu", resolution=8, fmap_base=32, fmap_max=8, z_dim=8, fused_adam=False,
                          **{"schedule.initial_resolution": 4, "loop.amp": amp})
    recipe = pggan.PGGANRecipe(config, 0, DistEnv())
    phase = config.schedule.phase(4_500, 8)  # the fade into 8 px
    assert phase.alpha < 1
    _one_step(recipe, {"images": torch.rand(16, 3, 8, 8) * 2 - 1}, phase, amp)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_dcgan_step(amp):
    _skip_unless_cpu_autocast(amp)
    torch.manual_seed(0)
    config = baselines.preset("dcgan", "cpu", ngf=4, ndf=4, z_dim=8, batch_size=4, **{"loop.amp": amp})
    recipe = baselines.DCGANRecipe(config, DistEnv())
    _one_step(recipe, {"images": torch.rand(4, 3, 32, 32) * 2 - 1}, recipe.phase(0), amp)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_mask2image_step(amp):
    _skip_unless_cpu_autocast(amp)
    torch.manual_seed(0)
    config = setup.apply_overrides(mask2image.Mask2ImageConfig(arch="ours", resolution=32, batch_size=2, ngf=4, ndf=4,
                                                               n_blocks=1), {"loop.amp": amp})
    trainer = mask2image.Mask2ImageTrainer(config, 3, DistEnv())
    batch = {"images": torch.rand(2, 3, 32, 32) * 2 - 1, "masks": (torch.rand(2, 1, 32, 32) > 0.5).float(),
             "labels": torch.tensor([0, 1])}
    _one_step(trainer, batch, trainer.phase(0), amp)
