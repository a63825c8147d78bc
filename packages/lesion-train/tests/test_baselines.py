"""DCGAN/LAPGAN baselines on the generic driver: published defaults, tiny runs and resume, LAPGAN's
levels, and LAPGAN's coarse level on real images (slow)."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from lesion_models import load_pretrained
from lesion_models.dcgan import DCGANGenerator
from lesion_models.lapgan import LAPGANGenerator
from lesion_train import baselines, runs
from lesion_train.distributed import DistEnv


@pytest.fixture(autouse=True)
def phantom_cache(tmp_path_factory, monkeypatch, one_thread):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def tiny_config(tmp_path, arch, **overrides):
    base = {
        "phantom_count": 64, "z_dim": 8, "ngf": 4, "ndf": 4, "coarse_g_hidden": 16, "coarse_d_hidden": 16,
        "level_g_features": 4, "level_d_features": 4, "batch_size": 8, "tick_kimg": 0.016,
        "loop.total_kimg": 0.032, "loop.minibatch_repeats": 2, "loop.snapshot_ticks": 1, "loop.grid_size": 4,
        "loop.run_root": str(tmp_path / "runs"), "loop.cpu_threads": 1,
    }
    return baselines.preset(arch, "cpu", **{**base, **overrides})


def test_published_defaults():
    dcgan = baselines.BaselineTrainConfig(arch="dcgan")
    assert (dcgan.lr, dcgan.adam_beta1, dcgan.batch_size, dcgan.z_dim, dcgan.ngf, dcgan.g_ema_beta) == (2e-4, 0.5, 128, 100, 64, 0.0)
    assert dcgan.optimizer == "adam"
    lapgan = baselines.BaselineTrainConfig(arch="lapgan")
    assert (lapgan.optimizer, lapgan.lr, lapgan.momentum) == ("sgd", 0.02, 0.5)  # Denton et al. Sec. 4
    lap = lapgan.network_config()
    assert (lap.coarse_g_hidden, lap.coarse_d_hidden, lap.coarse_z_dim) == (1200, 600, 100)
    assert baselines.BaselineTrainConfig(arch="lapgan", optimizer="adam").lr == 2e-4
    assert baselines.preset("lapgan", "cpu", optimizer="adam").lr == 2e-4  # not SGD's 0.02
    assert baselines.preset("lapgan", "cpu", optimizer="adam", lr=1e-3).lr == 1e-3
    with pytest.raises(ValueError, match="optimizer"):
        baselines.BaselineTrainConfig(arch="lapgan", optimizer="rmsprop")
    with pytest.raises(ValueError, match="arch"):
        baselines.BaselineTrainConfig(arch="wgan")


@pytest.mark.parametrize("arch", ["dcgan", "lapgan"])
def test_tiny_run_then_resume(tmp_path, arch):
    result = baselines.train_baseline(tiny_config(tmp_path, arch))
    run = result.run_dir
    log = runs.JsonlLog(run / runs.LOG_NAME).read()
    assert len(log) == 2 and all(math.isfinite(r[k]) for r in log for k in ("D_loss", "G_loss"))
    if arch == "lapgan":  # one independent GAN per level, each logged
        assert {"D_loss_8", "D_loss_16", "D_loss_32", "G_loss_8", "G_loss_32"} <= set(log[0])
    assert result.final_grid.is_file() and (run / "grids" / "reals.png").is_file()
    options = json.loads((run / runs.OPTIONS_NAME).read_text())
    assert options["arch"] == arch and baselines.run_arch(run) == arch
    G = load_pretrained(result.final_snapshot / "G_ema")
    assert isinstance(G, DCGANGenerator if arch == "dcgan" else LAPGANGenerator)
    assert G(torch.randn(2, G.z_dim)).shape == (2, 3, 32, 32)
    # G_ema is G (no averaging by default), batch-norm statistics included.
    G_train = load_pretrained(result.final_snapshot / "G")
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G_train.state_dict().values()))

    resumed = baselines.train_baseline(baselines.apply_overrides(baselines.load_run_config(run), {
        "loop.resume": str(run), "loop.total_kimg": 0.048}))
    assert resumed.run_dir == run
    log2 = runs.JsonlLog(run / runs.LOG_NAME).read()
    assert len(log2) == 3 and log2[2]["step"] == log[1]["step"] + 2
    assert runs.load_training_state(runs.latest_snapshot(run))["nimg"] == 48


def test_lapgan_sgd_schedule_reaches_the_optimizers(tmp_path):
    """Momentum +0.0008 per epoch up to 0.8, the rate divided by 1 + 4e-5 per epoch (45 kimg epochs)."""
    recipe = baselines.LAPGANRecipe(tiny_config(tmp_path, "lapgan"), DistEnv())
    assert isinstance(recipe.opt_g, torch.optim.SGD) and isinstance(recipe.opt_d, torch.optim.SGD)
    for nimg, lr, momentum in [(44_999, 0.02, 0.5), (45_000 * 100, 0.02 / 1.00004**100, 0.58), (45_000 * 1000, None, 0.8)]:
        phase = recipe.phase(nimg)
        recipe.enter_phase(phase)
        for optimizer in (recipe.opt_g, recipe.opt_d):
            coarse, levels = optimizer.param_groups
            assert coarse["momentum"] == levels["momentum"] == pytest.approx(momentum)
            assert coarse["lr"] == phase.lr_g and levels["lr"] == pytest.approx(phase.lr_g * 8 / 128)
        assert lr is None or phase.lr_g == pytest.approx(lr)


def test_lapgan_level_rate_is_the_papers_rate_per_image():
    """The residual levels' SGD rate is 0.02 at the paper's minibatch 128 and the same per image at
    any other; the coarse level keeps ``lr``. Adam has no per-image rule."""
    assert baselines.BaselineTrainConfig(arch="lapgan").level_lr == 0.02
    cpu = baselines.preset("lapgan", "cpu")
    assert (cpu.batch_size, cpu.lr, cpu.level_lr) == (8, 0.02, pytest.approx(0.00125))
    assert baselines.preset("lapgan", "cpu", batch_size=32).level_lr == pytest.approx(0.005)
    assert baselines.preset("lapgan", "cpu", lr=0.01).level_lr == pytest.approx(0.01 * 8 / 128)
    assert baselines.preset("lapgan", "cpu", batch_size=32, level_lr=0.003).level_lr == 0.003
    assert baselines.preset("lapgan", "cpu", optimizer="adam").level_lr == 2e-4


def test_lapgan_runs_from_before_level_lr_resume_with_their_rates(tmp_path):
    """Their options lack ``level_lr`` (every level trained at ``lr``) and their optimizer states hold
    one parameter group per network."""
    options = {"arch": "lapgan", "lr": 0.02, "batch_size": 8}
    assert baselines.BaselineTrainConfig(**baselines.BaselineTrainConfig.upgrade_options(options)).level_lr == 0.02
    assert "level_lr" not in baselines.BaselineTrainConfig.upgrade_options({"arch": "dcgan"})
    recipe = baselines.LAPGANRecipe(tiny_config(tmp_path, "lapgan"), DistEnv())
    old = {}
    for name, net in (("opt_g", recipe.G), ("opt_d", recipe.D)):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.5)
        for p in net.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        old[name] = optimizer.state_dict()
    recipe.load_state_dict({**old, "scaler_g": {}, "scaler_d": {}})
    first_level = next(recipe.G.levels.parameters())
    assert len(recipe.opt_g.param_groups) == 2
    assert torch.equal(recipe.opt_g.state[first_level]["momentum_buffer"], torch.ones_like(first_level))


def test_lapgan_inputs_are_uniform_and_coarse_init_is_the_official_one():
    """The paper's U(-1, 1) code and noise planes from the Gaussian latent; eyescream's N(0, 0.05) and
    N(0, 0.005) weights in the coarse G and D."""
    from lesion_models.lapgan import LAPGANConfig, LAPGANDiscriminator, uniform_noise

    u = uniform_noise(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert u.abs().max() < 1 and u.mean().abs() < 0.01
    assert torch.quantile(u, torch.tensor([0.1, 0.5, 0.9])).sub(torch.tensor([-0.8, 0.0, 0.8])).abs().max() < 0.01
    torch.manual_seed(0)
    config = LAPGANConfig()
    G, D = LAPGANGenerator(config), LAPGANDiscriminator(config)
    for net, std in ((G.coarse_net, 0.05), (D.coarse_net, 0.005)):
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        assert len(linears) == 3 and all(m.weight.std().item() == pytest.approx(std, rel=0.1) for m in linears)
        assert all(torch.all(m.bias == 0) for m in linears)


def test_lapgan_levels_are_independent(tmp_path):
    """Each level's fake depends on its own generator only: it is conditioned on the real coarser image."""
    config = tiny_config(tmp_path, "lapgan")
    recipe = baselines.LAPGANRecipe(config, DistEnv())
    reals = torch.rand(4, 3, 32, 32) * 2 - 1
    critics = recipe.critics(reals)
    assert [real.shape[-1] for _, real, _ in critics] == [8, 16, 32]
    for index, (_, _real, fake) in enumerate(critics):
        recipe.G.zero_grad(set_to_none=True)
        fake.sum().backward(retain_graph=True)
        own = recipe.G.coarse_net if index == 0 else recipe.G.levels[index - 1]
        touched = {id(p) for p in recipe.G.parameters() if p.grad is not None}
        assert touched == {id(p) for p in own.parameters()}
    # The real inputs are the real pyramid: level 32 is the batch itself, level 8 its 4x4 average.
    assert torch.equal(critics[2][1], reals)
    assert torch.allclose(critics[0][1], torch.nn.functional.avg_pool2d(reals, 4), atol=1e-6)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """RMS pixel distance averaged over all pairs: ~0 for a collapsed generator."""
    flat = images.flatten(1)
    n = len(flat)
    return float(torch.cdist(flat, flat).sum() / (n * (n - 1)) / flat.shape[1] ** 0.5)


def isic_sample() -> str:
    sample = os.environ.get("LESION_SAMPLE_ISIC2017")
    if not sample or not Path(sample).is_dir():
        pytest.skip("LESION_SAMPLE_ISIC2017 is not set to the ISIC-2017 sample")
    return sample


@pytest.mark.slow  # the cpu preset's 14 kimg on real images: about a minute on two idle cores
def test_lapgan_coarse_level_is_not_collapsed_on_real_images(tmp_path):
    # The coarse 8x8 GAN decides what a LAPGAN sample looks like; once collapsed, every sample is
    # the same blob. Its samples must spread about as far apart as the real 8x8 images do: 0.89
    # and 0.85 of the real spread at the preset's minibatch 8 (seeds 0, 1), 0.58 and 0.52 at 16.
    sample = isic_sample()
    from lesion_data.store import PreparedStore

    config = baselines.preset("lapgan", "cpu", data=sample, **{
        "loop.run_root": str(tmp_path / "runs"), "loop.cpu_threads": 1, "loop.grid_size": 4,
        "loop.snapshot_ticks": 1000})
    result = baselines.train_baseline(config)
    G = load_pretrained(result.final_snapshot / "G_ema")
    with torch.no_grad():
        coarse = G.coarse(torch.randn(256, G.config.coarse_z_dim, generator=torch.Generator().manual_seed(0)))
    store = PreparedStore(runs.read_options(result.run_dir)["resolved"]["store"])
    real = runs.from_uint8(store.images(8))
    ratio = mean_pairwise_distance(coarse) / mean_pairwise_distance(real)
    assert 0.7 < ratio < 1.4, f"coarse samples spread {ratio:.2f} x the real images'"


@pytest.mark.slow  # 60 kimg on real images: about four minutes on one idle core
def test_lapgan_residual_levels_stay_finite_on_real_images(tmp_path):
    # At minibatch 8 with the coarse level's rate 0.02, the 16 px level's generator weights jumped
    # and the loss became NaN at 37 kimg (seed 0); at the paper's rate per image they stay near
    # their initial size through 100 kimg (seeds 0, 1).
    config = baselines.preset("lapgan", "cpu", data=isic_sample(), **{
        "loop.total_kimg": 60, "loop.run_root": str(tmp_path / "runs"), "loop.cpu_threads": 1,
        "loop.grid_size": 4, "loop.snapshot_ticks": 1000})
    fresh = baselines.LAPGANRecipe(config, DistEnv()).G.levels  # the norm of a default init varies by < 1%
    result = baselines.train_baseline(config)  # raises NonFiniteLossError on a NaN or inf loss
    trained = load_pretrained(result.final_snapshot / "G").levels
    for level, (before, after) in enumerate(zip(fresh, trained, strict=True)):
        growth = torch.cat([p.flatten() for p in after.parameters()]).norm() / torch.cat(
            [p.flatten() for p in before.parameters()]).norm()
        assert growth < 1.5, f"level {level} generator weights grew {growth:.2f}x"
