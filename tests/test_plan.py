"""lesion_train.plan at tiny sizes: schedules, parameter counts by hand, FLOPs against
torch.utils.flop_counter on real tensors, memory components, warnings and the printed table.
The full-size traces (4 to 1024 px) are in test_plan_full_size.py (slow)."""

import sys
from pathlib import Path

import pytest
import torch
from lesion_train import baselines, mask2image, pggan, plan, setup
from lesion_train.distributed import DistEnv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _perf  # noqa: E402


def tiny_pggan(**overrides):
    base = {"resolution": 8, "fmap_base": 32, "fmap_max": 8, "z_dim": 8, "schedule.initial_resolution": 4,
            "schedule.stabilize_kimg": 1.0, "schedule.transition_kimg": 2.0, "schedule.minibatch": {4: 16},
            "schedule.minibatch_base": 8, "schedule.lr": {8: 0.002}, "loop.total_kimg": 5.0}
    return pggan.preset("gpu", **{**base, **overrides})


def tiny_dcgan(**overrides):
    return baselines.preset("dcgan", "cpu", **{"z_dim": 4, "ngf": 2, "ndf": 2, "batch_size": 4, **overrides})


def test_pggan_schedule_rows():
    rows = plan.plan(tiny_pggan()).phases
    assert [(p.resolution, p.kind, p.kimg_start, p.kimg_end, p.batch_per_device, p.lr_g) for p in rows] == [
        (4, "stable", 0.0, 1.0, 16, 0.001),
        (8, "fade", 1.0, 3.0, 8, 0.002),
        (8, "stable", 3.0, 5.0, 8, 0.002),
    ]
    halves = plan.plan(tiny_pggan(), world_size=2).phases
    assert [p.batch_per_device for p in halves] == [8, 4, 4]


def test_conditional_pggan_is_planned_with_its_labels():
    config = tiny_pggan(**{"schedule.initial_resolution": 8, "loop.total_kimg": 1.0})
    plain = plan.plan(config)
    conditional = plan.plan(setup.apply_overrides(config, {"conditional": True}), num_classes=3)
    assert conditional.params["G"] > plain.params["G"] and conditional.params["D"] > plain.params["D"]
    assert conditional.phases[0].flops_per_image > plain.phases[0].flops_per_image


def test_mask2image_rows_follow_the_decay_and_the_local_only_stretch():
    config = mask2image.Mask2ImageConfig(arch="pix2pixhd", resolution=64, batch_size=2, ngf=4, ndf=4, n_blocks=1,
                                         n_local_enhancers=1, fix_global_kimg=10.0)
    config = setup.apply_overrides(config, {"loop.total_kimg": 40.0})
    rows = plan.plan(config).phases
    assert [(p.kind, p.kimg_start, p.kimg_end) for p in rows] == [
        ("local only", 0.0, 10.0), ("constant", 10.0, 20.0), ("lr decay", 20.0, 40.0)]
    assert rows[-1].lr_g == pytest.approx(2e-4)


def test_parameter_counts_match_a_hand_count():
    # G: convT 4->8 (4x4) 512, BN 16, convT 8->4 512, BN 8, convT 4->2 128, BN 4, convT 2->3 96.
    # D: conv 3->2 96, conv 2->4 128, BN 8, conv 4->8 512, BN 16, conv 8->1 128.
    run = plan.plan(tiny_dcgan())
    assert run.params == {"G": 1276, "D": 888}
    (phase,) = run.phases
    assert phase.grad_bytes == 4 * (1276 + 888)
    assert phase.optimizer_bytes == 2 * 4 * (1276 + 888)  # Adam's two moments
    assert phase.ema_bytes == 4 * 1276
    buffers = 4 * 2 * (8 + 4 + 2 + 4 + 8) + 8 * 5  # BN running mean and variance, five batch counters
    assert phase.weight_bytes == 4 * (1276 + 888) + buffers


def _real_flops(recipe, batch, phase):
    recipe.enter_phase(phase)
    return _perf.count_flops(lambda: recipe.train_step(batch, phase)) / batch["images"].shape[0]


@pytest.mark.parametrize("loss", ["wgangp", "logistic"])
def test_pggan_flops_match_the_flop_counter_on_real_tensors(loss):
    config = tiny_pggan(loss=loss, **{"schedule.initial_resolution": 8, "loop.total_kimg": 1.0})
    (planned,) = plan.plan(config).phases
    recipe = pggan.PGGANRecipe(config, 0, DistEnv())
    phase = config.schedule.phase(0, 8)
    real = _real_flops(recipe, {"images": torch.rand(8, 3, 8, 8) * 2 - 1}, phase)
    assert planned.flops_per_image == pytest.approx(real, rel=1e-9)
    # The penalty's double backward is in: the G step alone is far less than the D step with it.
    assert planned.flops_per_image > 0


def test_mask2image_and_lapgan_flops_match_the_flop_counter_on_real_tensors():
    config = mask2image.Mask2ImageConfig(arch="ours", resolution=32, batch_size=2, ngf=4, ndf=4, n_blocks=1,
                                         decay_start=1.0)
    (planned,) = plan.plan(config).phases
    trainer = mask2image.Mask2ImageTrainer(config, 3, DistEnv())
    batch = {"images": torch.rand(2, 3, 32, 32) * 2 - 1, "masks": (torch.rand(2, 1, 32, 32) > 0.5).float(),
             "labels": torch.tensor([0, 2])}
    assert planned.flops_per_image == pytest.approx(_real_flops(trainer, batch, trainer.phase(0)), rel=1e-9)

    config = baselines.preset("lapgan", "cpu", resolution=32, coarse_g_hidden=8, coarse_d_hidden=8,
                              level_g_features=4, level_d_features=4, batch_size=4)
    (planned,) = plan.plan(config).phases
    recipe = baselines.LAPGANRecipe(config, DistEnv())
    real = _real_flops(recipe, {"images": torch.rand(4, 3, 32, 32) * 2 - 1}, recipe.phase(0))
    assert planned.flops_per_image == pytest.approx(real, rel=1e-9)


def test_lapgan_plan_names_the_residual_levels_rate():
    config = baselines.preset("lapgan", "cpu", resolution=16, coarse_g_hidden=8, coarse_d_hidden=8,
                              level_g_features=4, level_d_features=4)
    text = plan.format_plan(plan.plan(config))
    assert " 0.02 " in text and "the residual levels train at 0.00125 (level_lr)" in text
    same_rate = plan.plan(baselines.apply_overrides(config, {"level_lr": 0.02}))
    assert same_rate.notes == []


def test_memory_components_and_half_precision_activations():
    config = tiny_pggan(**{"schedule.initial_resolution": 8, "loop.total_kimg": 1.0})
    (fp32,) = plan.plan(config).phases
    assert fp32.saved_bytes > 0
    # At the D step's backward: weights, EMA, optimizer state, G's gradients and the saved activations.
    assert fp32.peak_bytes >= fp32.weight_bytes + fp32.ema_bytes + fp32.optimizer_bytes + fp32.saved_bytes
    (bf16,) = plan.plan(setup.apply_overrides(config, {"loop.amp": "bf16"})).phases
    assert bf16.weight_bytes == fp32.weight_bytes and bf16.optimizer_bytes == fp32.optimizer_bytes
    assert bf16.saved_bytes < 0.8 * fp32.saved_bytes  # convolution inputs saved in half precision
    assert bf16.flops_per_image == fp32.flops_per_image
    # Twice the batch, about twice the activations; the weights stay.
    (double,) = plan.plan(tiny_pggan(**{"schedule.initial_resolution": 8, "loop.total_kimg": 1.0,
                                        "schedule.minibatch_base": 16})).phases
    assert double.saved_bytes == pytest.approx(2 * fp32.saved_bytes, rel=0.1)
    assert double.weight_bytes == fp32.weight_bytes


def test_warnings_name_the_phases_that_do_not_fit():
    run = plan.plan(tiny_pggan())
    assert run.warnings(1000) == []
    needs = run.phases[-1].needs_gib()
    below = run.warnings(needs - 1e-6)
    assert len(below) >= 1 and "8 px stable" in below[-1] and "batch 8 per device" in below[-1]
    text = plan.format_plan(run, device_memory_gib=needs - 1e-6)
    assert "warning: 8 px stable" in text


def test_format_plan_prints_rows_totals_and_wall_times():
    run = plan.plan(tiny_pggan())
    text = plan.format_plan(run)
    assert "pggan 8 px, amp off, 1 device(s)" in text
    largest = max(run.phases, key=lambda p: p.cpu_resident_bytes)
    assert largest.cpu_resident_bytes == pytest.approx(largest.peak_bytes + plan.CPU_SAVED_OVERHEAD * largest.saved_bytes)
    assert f"on a CPU: ~{largest.cpu_resident_bytes / plan.GIB:.2f} GiB more resident memory" in text
    assert text.count(" stable ") == 2 and text.count(" fade ") == 1
    for gpu in plan.GPUS:
        assert gpu.name in text
    assert "assumed 40%" in text
    seconds = run.total_flops / (1e12 * 0.5)
    assert run.wall_seconds(2.5, utilisation=0.2) == pytest.approx(seconds)
    assert "wall time at 10 TFLOPS x 40% utilisation" in plan.format_plan(run, device_tflops=10)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="world_size"):
        plan.plan(tiny_pggan(), world_size=0)
    with pytest.raises(ValueError, match="cannot give each of"):
        plan.plan(tiny_dcgan(batch_size=2), world_size=4)
    with pytest.raises(TypeError, match="no plan"):
        plan.plan(object())


def test_apps_print_the_plan_and_exit_without_a_run(tmp_path, load_app, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    pggan_app = load_app("pggan_train").main
    out = CliRunner().invoke(pggan_app, ["--resolution", "8", "--fmap-base", "32", "--fmap-max", "8", "--z-dim", "8",
                                         "--initial-resolution", "4", "--plan", "--plan-devices", "2",
                                         "--plan-device-tflops", "100", "--plan-device-memory", "1e-6"])
    assert out.exit_code == 0, out.output
    assert "pggan 8 px, amp off, 2 device(s)" in out.output and " fade " in out.output
    assert "wall time at 100 TFLOPS" in out.output and "warning: 8 px stable" in out.output
    out = CliRunner().invoke(pggan_app, ["--arch", "dcgan", "--z-dim", "4", "--plan", "--plan-device-tflops", "-1"])
    assert out.exit_code == 2 and "Invalid value for '--plan-device-tflops'" in out.output
    out = CliRunner().invoke(load_app("mask2image_train").main,
                             ["--arch", "pix2pix", "--resolution", "32", "--ngf", "4", "--ndf", "4", "--batch", "2",
                              "--plan", "--plan-device-tflops", "10"])
    assert out.exit_code == 0, out.output
    assert "mask2image-pix2pix 32 px" in out.output and "lr decay" in out.output
    assert not (tmp_path / "runs").exists()
