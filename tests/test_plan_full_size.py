"""Every GPU preset traced at full size on the meta device (lesion_train.plan): the gpu preset's
whole PGGAN schedule 4 -> 1024 px with the published widths, every fade and stable phase, G and D
forward and backward with the gradient penalty's double backward; mask2image at 1024 px, all four
architectures, with pix2pixHD's local enhancer and three discriminator scales (pix2pix: its one
PatchGAN); DCGAN at 256 px and
LAPGAN at 1024 px, their largest sizes. A shape error anywhere in these schedules fails here."""

import math

import pytest
import torch
from lesion_train import baselines, mask2image, pggan, plan

pytestmark = pytest.mark.slow


def _sane(run: plan.RunPlan) -> None:
    for phase in run.phases:
        assert phase.flops_per_image > 0 and phase.saved_bytes > 0
        assert phase.peak_bytes >= phase.weight_bytes + phase.optimizer_bytes + phase.saved_bytes
    assert math.isfinite(run.total_flops) and run.total_flops > 0


@pytest.mark.parametrize("loss", ["wgangp", "logistic"])
def test_pggan_gpu_preset_whole_schedule_to_1024(loss):
    config = pggan.preset("gpu", resolution=1024, loss=loss)
    run = plan.plan(config)
    _sane(run)
    assert run.params["G"] > 23e6 and run.params["D"] > 23e6  # the paper's 23.1 M each
    seen = [(p.resolution, p.kind) for p in run.phases]
    expected = [(4, "stable")] + [(2**k, kind) for k in range(3, 11) for kind in ("fade", "stable")]
    assert seen == expected
    assert run.phases[-1].kimg_end == 12000 and run.phases[-1].batch_per_device == 4
    assert run.phases[-1].lr_g == 0.0015
    # Every level adds work per image; a fade costs as much as the stable phase after it, and more
    # (both resolutions' outputs) than the one before.
    stable = [p.flops_per_image for p in run.phases if p.kind == "stable"]
    fade = [p.flops_per_image for p in run.phases if p.kind == "fade"]
    assert all(b > a for a, b in zip(stable, stable[1:]))
    assert all(s_before < f and f == pytest.approx(s_after, rel=0.01) for s_before, f, s_after in zip(stable, fade, stable[1:]))
    assert plan.format_plan(run).count("\n") > len(run.phases)


@pytest.mark.parametrize("arch", mask2image.ARCHS)
def test_mask2image_1024_all_architectures(arch):
    enhancer = 1 if arch in ("ours", "pix2pixhd") else 0
    config = mask2image.Mask2ImageConfig(arch=arch, resolution=1024, n_local_enhancers=enhancer, num_d=3, batch_size=1)
    run = plan.plan(config)
    _sane(run)
    assert {p.resolution for p in run.phases} == {1024}
    with torch.device("meta"):
        G, D = mask2image.build_networks(config, 3)
    assert len(D.scales) == (1 if arch == "pix2pix" else 3)  # pix2pix's D is one 70x70 PatchGAN
    assert run.params == {"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())}


@pytest.mark.parametrize(("arch", "resolution"), [("dcgan", 256), ("lapgan", 1024)])
def test_baselines_at_their_largest_sizes(arch, resolution):
    run = plan.plan(baselines.preset(arch, "gpu", resolution=resolution))
    _sane(run)
    assert run.resolution == resolution


def test_amp_and_several_devices_at_1024():
    run = plan.plan(pggan.preset("gpu", resolution=1024, **{"loop.amp": "fp16"}), world_size=4)
    _sane(run)
    assert run.phases[0].batch_per_device == 32 and run.phases[-1].batch_per_device == 1
    # The one-device tables' 4 images per step at 512 and 1024 px do not divide over 8 devices;
    # the 8-device preset's do.
    with pytest.raises(ValueError, match="512 px: a minibatch of 4 images cannot give each of 8 devices"):
        plan.plan(pggan.preset("gpu", resolution=1024), world_size=8)
    eight = plan.plan(pggan.preset("gpu", 8, resolution=1024), world_size=8)
    assert eight.phases[0].batch_per_device == 64 and eight.phases[-1].batch_per_device == 4
