"""DCGAN and LAPGAN training through lesion_train.baselines and apps/pggan_train --arch (in process):
tiny 32 px runs on phantoms, resume, level independence, the sampling app on a baseline run."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lesion_models import load_pretrained
from lesion_models.dcgan import DCGANGenerator
from lesion_models.lapgan import LAPGANGenerator
from lesion_train import baselines, runs
from lesion_train.distributed import DistEnv

ROOT = Path(__file__).resolve().parents[1]


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


def load_app(name):
    spec = importlib.util.spec_from_file_location(f"app_{name}", ROOT / "apps" / name / "__main__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_defaults():
    dcgan = baselines.BaselineTrainConfig(arch="dcgan")
    assert (dcgan.lr, dcgan.adam_beta1, dcgan.batch_size, dcgan.z_dim, dcgan.ngf, dcgan.g_ema_beta) == (2e-4, 0.5, 128, 100, 64, 0.0)
    lap = baselines.BaselineTrainConfig(arch="lapgan").network_config()
    assert (lap.coarse_g_hidden, lap.coarse_d_hidden, lap.coarse_z_dim) == (1200, 600, 100)
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


def test_lapgan_levels_are_independent(tmp_path):
    """Each level's fake depends on its own generator only: it is conditioned on the real coarser image."""
    config = tiny_config(tmp_path, "lapgan")
    recipe = baselines.LAPGANRecipe(config, DistEnv())
    reals = torch.rand(4, 3, 32, 32) * 2 - 1
    critics = recipe.critics(reals)
    assert [real.shape[-1] for _, real, _ in critics] == [8, 16, 32]
    for index, (_, real, fake) in enumerate(critics):
        recipe.G.zero_grad(set_to_none=True)
        fake.sum().backward(retain_graph=True)
        own = recipe.G.coarse_net if index == 0 else recipe.G.levels[index - 1]
        touched = {id(p) for p in recipe.G.parameters() if p.grad is not None}
        assert touched == {id(p) for p in own.parameters()}
    # The real inputs are the real pyramid: level 32 is the batch itself, level 8 its 4x4 average.
    assert torch.equal(critics[2][1], reals)
    assert torch.allclose(critics[0][1], torch.nn.functional.avg_pool2d(reals, 4), atol=1e-6)


def test_app_arch_dcgan_then_resume_and_sample(tmp_path):
    app = load_app("pggan_train")
    args = ["--arch", "dcgan", "--phantom-count", "64", "--z-dim", "8", "--total-kimg", "0.064", "--tick-kimg", "0.064",
            "--minibatch-repeats", "1", "--grid-size", "4", "--cpu-threads", "1", "--out", str(tmp_path / "runs")]
    out = CliRunner().invoke(app.main, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    run = Path(out.output.split("run: ")[1].splitlines()[0])
    assert json.loads((run / runs.OPTIONS_NAME).read_text())["batch_size"] == 64  # the cpu preset
    # --resume takes the arch from the run, not from --arch's default.
    out = CliRunner().invoke(app.main, ["--resume", str(run), "--total-kimg", "0.128"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert runs.load_training_state(runs.latest_snapshot(run))["nimg"] == 128
    bad = CliRunner().invoke(app.main, ["--arch", "lapgan", "--fmap-base", "64"])
    assert bad.exit_code == 2 and "--fmap-base is a PGGAN option" in bad.output
    sample = CliRunner().invoke(load_app("pggan_sample").main, [str(run), "--n", "3", "--out", str(tmp_path / "s")])
    assert sample.exit_code == 0, sample.output
    assert len(list((tmp_path / "s").glob("*.png"))) >= 3
