"""End-to-end PGGAN training through lesion_train.pggan (in process): tiny runs at 8 px on phantoms."""

import json
import math
import os

import pytest
import torch
from lesion_models import load_pretrained
from lesion_train import pggan, runs
from lesion_train.pggan import PGGANSchedule, blend_reals


def tiny_config(tmp_path, **overrides):
    base = {
        "resolution": 8, "phantom_count": 64, "fmap_base": 32, "fmap_max": 8, "z_dim": 8,
        "schedule.initial_resolution": 4, "schedule.stabilize_kimg": 0.064, "schedule.transition_kimg": 0.064, "schedule.minibatch": {},
        "schedule.minibatch_base": 8, "schedule.tick_kimg_base": 0.064, "loop.total_kimg": 0.256,
        "loop.minibatch_repeats": 2, "loop.snapshot_ticks": 1, "loop.grid_size": 8,
        "loop.run_root": str(tmp_path / "runs"), "loop.cpu_threads": 1,
    }
    return pggan.preset("cpu", **{**base, **overrides})


@pytest.fixture(autouse=True)
def phantom_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_official_v2_1gpu_schedule():
    s = PGGANSchedule()
    p = s.phase(0, 256)
    assert (p.resolution, p.batch_size, p.alpha, p.lr_g, p.tick_kimg) == (4, 128, 1.0, 0.001, 160)
    p = s.phase(900_000, 256)  # halfway through the first fade: 8 px, alpha 0.5
    assert (p.resolution, p.alpha, p.batch_size) == (8, 0.5, 128)
    assert s.phase(1_200_000, 256).key != p.key != s.phase(599_000, 256).key  # optimizer resets
    assert s.phase(2_100_000, 256).resolution == 16 and s.phase(2_100_000, 256).alpha == pytest.approx(0.5)
    late = s.phase(11_000_000, 256)
    assert (late.resolution, late.alpha, late.batch_size, late.tick_kimg) == (256, 1.0, 8, 40)
    assert s.phase(7_500_000, 1024).lr_g == 0.001 and s.phase(20_000_000, 1024).lr_g == 0.0015
    assert s.phase(20_000_000, 1024).batch_size == 4
    assert s.phase(11_000_000, 256, world_size=3).batch_size == 6  # divisible by the GPUs, as officially


@pytest.mark.parametrize(("devices", "preset_of"), [(1, 1), (2, 2), (3, 2), (4, 4), (8, 8), (16, 8)])
def test_gpu_preset_takes_the_official_tables_for_the_device_count(devices, preset_of):
    # config.py of tkarras/progressive_growing_of_gans: preset-v2-{1gpu,2gpus,4gpus,8gpus}.
    official = {1: (4, 128, 0.0015), 2: (8, 256, 0.002), 4: (16, 512, 0.003), 8: (32, 512, 0.003)}
    base, at_4px, lr_1024 = official[preset_of]
    schedule = pggan.preset("gpu", devices).schedule
    assert schedule.minibatch_base == base and schedule.minibatch[4] == at_4px
    last = schedule.phase(20_000_000, 1024, world_size=devices)
    # Official rounding to the device count, then the fp32 cap of 4 images per GPU at 1024 px.
    assert last.batch_size == min(base - base % devices, 4 * devices) and last.lr_g == lr_1024
    # Every phase up to 1024 px gives every device the same number of images, at least one.
    from lesion_train import gan_loop

    class Recipe:
        @staticmethod
        def phase(nimg):
            return schedule.phase(nimg, final_resolution=1024, world_size=devices)

    gan_loop.check_schedule(Recipe, 12000, devices)


def test_blend_reals_fades_between_resolutions():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(blend_reals(x, 1.0), x)
    low = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, 2), scale_factor=2)
    torch.testing.assert_close(blend_reals(x, 0.0), low)
    torch.testing.assert_close(blend_reals(x, 0.25), 0.75 * low + 0.25 * x)


def test_tiny_run_then_resume_continues(tmp_path):
    result = pggan.train_pggan(tiny_config(tmp_path))
    run = result.run_dir
    log = runs.JsonlLog(run / runs.LOG_NAME).read()
    assert log and all(math.isfinite(r[k]) for r in log for k in ("D_loss", "G_loss", "D_gp"))
    assert {r["resolution"] for r in log} == {4, 8} and any(0 < r["alpha"] < 1 for r in log)
    assert {"kimg", "alpha", "sec_per_kimg", "img_per_sec", "peak_mem_mb"} <= set(log[0])
    assert result.final_grid.is_file() and (run / "grids" / "reals.png").is_file()
    options = json.loads((run / runs.OPTIONS_NAME).read_text())
    assert options["schedule"]["stabilize_kimg"] == 0.064 and options["resolved"]["world_size"] == 1
    snapshot = runs.latest_snapshot(run)
    assert snapshot == result.final_snapshot
    G = load_pretrained(snapshot / "G_ema")
    assert (G.resolution, G.alpha, G.num_classes) == (8, 1.0, 0)
    state = runs.load_training_state(snapshot)
    assert state["nimg"] >= 256

    resumed = pggan.train_pggan(pggan.apply_overrides(pggan.load_run_config(run), {"loop.resume": str(run),
                                                                                    "loop.total_kimg": 0.384}))
    assert resumed.run_dir == run
    log2 = runs.JsonlLog(run / runs.LOG_NAME).read()
    assert len(log2) > len(log)
    assert log2[len(log)]["step"] > log[-1]["step"] and log2[len(log)]["kimg"] > log[-1]["kimg"]
    assert runs.load_training_state(runs.latest_snapshot(run))["nimg"] >= 384


def test_resume_within_a_phase_matches_an_uninterrupted_run(tmp_path):
    # The data iterator's position and the RNG come back with the snapshot (same world size).
    whole = pggan.train_pggan(tiny_config(tmp_path / "a", **{"loop.total_kimg": 0.384}))
    half = pggan.train_pggan(tiny_config(tmp_path / "b"))  # stops at 0.256 kimg, 8 px, stable
    resumed = pggan.train_pggan(pggan.apply_overrides(pggan.load_run_config(half.run_dir),
                                                      {"loop.resume": str(half.run_dir), "loop.total_kimg": 0.384}))
    for name in ("G_ema", "D"):
        a = load_pretrained(whole.final_snapshot / name).state_dict()
        b = load_pretrained(resumed.final_snapshot / name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=f"{name}.{key}")


def test_a_snapshot_with_the_old_single_rng_state_still_resumes(tmp_path):
    half = pggan.train_pggan(tiny_config(tmp_path))
    path = half.final_snapshot / runs.STATE_NAME
    state = torch.load(path, weights_only=True)
    state["rng"] = state["rng"][0]  # before per-rank states, the main rank's alone was saved
    state.pop("data")  # and the data iterator was reseeded on resume
    torch.save(state, path)
    resumed = pggan.train_pggan(pggan.apply_overrides(pggan.load_run_config(half.run_dir),
                                                      {"loop.resume": str(half.run_dir), "loop.total_kimg": 0.384}))
    assert runs.load_training_state(resumed.final_snapshot)["nimg"] >= 384


def test_resume_mid_fade_restores_stage_and_optimizer(tmp_path):
    # Stop in the middle of the 4 -> 8 fade, then resume: the stage and Adam state come back.
    config = tiny_config(tmp_path, **{"loop.total_kimg": 0.096, "schedule.tick_kimg_base": 0.032})
    run = pggan.train_pggan(config).run_dir
    snapshot = runs.latest_snapshot(run)
    G = load_pretrained(snapshot / "G")
    assert G.resolution == 8 and 0 < G.alpha < 1
    state = runs.load_training_state(snapshot)
    assert state["recipe"]["opt_g"]["state"]  # Adam moments were saved
    from lesion_train.distributed import DistEnv

    recipe = pggan.PGGANRecipe(config, 0, DistEnv())
    recipe.load_state_dict(state["recipe"])
    recipe.enter_phase(recipe.phase(state["nimg"]))
    assert recipe.opt_g.state_dict()["state"], "resuming mid-phase must not reset Adam"


def test_conditional_run_and_logistic_loss(tmp_path):
    config = tiny_config(tmp_path, conditional=True, loss="logistic", **{"loop.total_kimg": 0.064})
    result = pggan.train_pggan(config)
    log = runs.JsonlLog(result.run_dir / runs.LOG_NAME).read()
    assert "D_aux_real" in log[-1] and "G_aux" in log[-1] and "D_r1" in log[-1]
    G = load_pretrained(result.final_snapshot / "G_ema")
    assert G.num_classes == 3


def test_divergence_stops_naming_the_step_and_keeps_the_snapshot(tmp_path):
    run = pggan.train_pggan(tiny_config(tmp_path, **{"loop.total_kimg": 0.064})).run_dir
    before = runs.latest_snapshot(run)
    weights = (before / "G" / "model.safetensors").read_bytes()
    config = pggan.apply_overrides(pggan.load_run_config(run),
                                   {"loop.resume": str(run), "loop.total_kimg": 5.0, "schedule.lr_base": 1e30})
    with pytest.raises(runs.NonFiniteLossError, match=r"step \d+"):
        pggan.train_pggan(config)
    assert runs.latest_snapshot(run) == before
    assert (before / "G" / "model.safetensors").read_bytes() == weights
    load_pretrained(before / "G")


def test_bad_data_path_is_a_clear_error(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(runs.ResumeError.__mro__[1]):  # StoreError and ResumeError are RuntimeErrors
        pggan.train_pggan(tiny_config(tmp_path, data=str(tmp_path / "file.txt")))


@pytest.mark.slow
def test_gpu_preset_full_width_networks_run_one_step_at_64px():
    from lesion_train.distributed import DistEnv

    config = pggan.preset("gpu", resolution=64, **{"loop.cpu_threads": 0})
    recipe = pggan.PGGANRecipe(config, 3, DistEnv())
    assert recipe.G.config.nf(1) == 512 and recipe.G.z_dim == 512
    phase = recipe.phase(11_000_000)
    assert (phase.resolution, phase.batch_size) == (64, 32)
    recipe.enter_phase(phase)
    batch = {"images": torch.rand(4, 3, 64, 64) * 2 - 1, "labels": torch.tensor([0, 1, 2, 0])}
    before = recipe.G.to_rgb[-1].weight.detach().clone()
    terms = recipe.train_step(batch, phase)
    assert all(math.isfinite(float(v)) for v in terms.values())
    assert not torch.equal(before, recipe.G.to_rgb[-1].weight)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_is_finite_and_updates(tmp_path, amp):
    from lesion_train.distributed import DistEnv

    config = tiny_config(tmp_path, conditional=True, **{"loop.amp": amp})
    recipe = pggan.PGGANRecipe(config, 3, DistEnv())
    phase = recipe.phase(100)  # mid-fade
    recipe.enter_phase(phase)
    batch = {"images": torch.rand(8, 3, 8, 8) * 2 - 1, "labels": torch.arange(8) % 3}
    before = [p.detach().clone() for p in recipe.D.parameters()]
    for _ in range(12):  # fp16 loss scaling skips steps until its scale stops overflowing
        terms = recipe.train_step(batch, phase)
        assert all(math.isfinite(float(v)) for v in terms.values())
        if any(not torch.equal(b, p) for b, p in zip(before, recipe.D.parameters())):
            break
    else:
        raise AssertionError("D never updated")


def test_ema_rampup_follows_g_early(tmp_path):
    from lesion_train.distributed import DistEnv

    config = tiny_config(tmp_path, g_ema_beta=0.999, g_ema_rampup=True)
    recipe = pggan.PGGANRecipe(config, 0, DistEnv())
    recipe.enter_phase(recipe.phase(0))
    start = recipe.G_ema.dense.weight.detach().clone()
    recipe.train_step({"images": torch.rand(8, 3, 4, 4) * 2 - 1}, recipe.phase(0))
    # First step: beta = min(0.999, 1/10), so G_ema moves 90% of the way to G.
    expected = start + 0.9 * (recipe.G.dense.weight.detach() - start)
    torch.testing.assert_close(recipe.G_ema.dense.weight, expected)


@pytest.mark.slow  # ~40 s on a CPU: prepares the 210-image sample, trains twice
def test_raw_isic_folder_is_prepared_once_and_trains_conditionally(tmp_path):
    from pathlib import Path

    sample = os.environ.get("LESION_SAMPLE_ISIC2017")
    if not sample or not Path(sample).is_dir():
        pytest.skip("LESION_SAMPLE_ISIC2017 is not set to the ISIC-2017 sample")
    config = tiny_config(tmp_path, data=sample, conditional=True, **{"loop.total_kimg": 0.064})
    result = pggan.train_pggan(config)
    options = json.loads((result.run_dir / runs.OPTIONS_NAME).read_text())
    assert options["resolved"]["class_names"] == ["nevus", "melanoma", "seborrheic_keratosis"]
    store = Path(options["resolved"]["store"])
    assert store.parent.name == "stores" and str(store).startswith(os.environ["LESION_GAN_CACHE"])
    assert load_pretrained(result.final_snapshot / "G_ema").num_classes == 3
    # A second run finds the prepared store in the cache instead of decoding the JPEGs again.
    mtime = (store / "manifest.json").stat().st_mtime
    pggan.train_pggan(config)
    assert (store / "manifest.json").stat().st_mtime == mtime


def test_thread_choice_and_sampling_helpers(tmp_path):
    from lesion_train import sampling
    from lesion_train.distributed import DistEnv
    from lesion_train.gan_loop import configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads(1, DistEnv()) == 1 and torch.get_num_threads() == 1
        assert 1 <= configure_threads(0, DistEnv()) <= os.cpu_count()
    finally:
        torch.set_num_threads(before)
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    torch.testing.assert_close(sampling.slerp(a, b, torch.zeros(2, 1)), a)
    torch.testing.assert_close(sampling.slerp(a, b, torch.ones(2, 1)), b, rtol=1e-4, atol=1e-4)
    z1, z2 = sampling.latents(7, [3], 4), sampling.latents(7, [0, 1, 2, 3], 4)
    torch.testing.assert_close(z1[0], z2[3])  # image i depends only on (seed, i)
    with pytest.raises(runs.ResumeError, match="not a model directory"):
        runs.find_model(tmp_path)



@pytest.mark.slow  # ~40 s on a CPU: inductor compiles G's graphs
def test_compiled_generator_gives_eager_gradients_and_compiles_once_per_stage(tmp_path):
    from lesion_train.distributed import DistEnv
    from lesion_train.gan_loop import Phase
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    phase = Phase(resolution=8, batch_size=8, tick_kimg=1.0, alpha=0.4)
    images = torch.rand(8, 3, 8, 8) * 2 - 1
    recipes, terms = [], []
    for compile in (False, True):
        torch.manual_seed(0)
        recipes.append(pggan.PGGANRecipe(tiny_config(tmp_path, compile=compile), 0, DistEnv()))
        recipes[-1].enter_phase(phase)
        terms.append({k: v.item() for k, v in recipes[-1].train_step({"images": images}, phase).items()})
    assert isinstance(recipes[1].G_train, torch._dynamo.eval_frame.OptimizedModule)
    assert terms[1] == pytest.approx(terms[0], rel=1e-4, abs=1e-7)
    for name in ("G", "D"):  # the gradients of the steps just taken
        eager, compiled = (dict(r.models[name].named_parameters()) for r in recipes)
        for key, p in eager.items():
            atol = 1e-4 * p.grad.abs().max().item() + 1e-6
            torch.testing.assert_close(compiled[key].grad, p.grad, rtol=0, atol=atol, msg=f"{name}.{key}")

    # A whole run: 4 px, a fade to 8 px whose alpha changes every 2 steps, then 8 px. Per stage, G
    # with and without grad: 6 graphs; one per alpha would hit dynamo's limit and fall back to eager.
    torch._dynamo.reset()
    counters.clear()
    run = pggan.train_pggan(tiny_config(tmp_path, compile=True))
    assert 0 < counters["stats"]["unique_graphs"] <= 6
    for name in ("G", "G_ema", "D"):  # plain modules: no ``_orig_mod.`` prefixes from the wrapper
        assert load_pretrained(run.final_snapshot / name).state_dict().keys() == recipes[0].models[name].state_dict().keys()


def test_a_schedule_that_leaves_a_device_no_images_fails_before_the_first_step():
    # The v2-1gpu schedule's 4 images per step at 512 px cannot be split over 8 devices; the loop
    # must say so at the start of the run, not when the run reaches 512 px.
    from lesion_train import gan_loop

    class Schedule:
        @staticmethod
        def phase(nimg):
            return PGGANSchedule().phase(nimg, final_resolution=512, world_size=8)

    gan_loop.check_schedule(Schedule, 7800, 8)  # up to 256 px every device gets images
    with pytest.raises(ValueError, match="512 px: a minibatch of 4 images cannot give each of 8 devices"):
        gan_loop.check_schedule(Schedule, 9000, 8)
    with pytest.raises(ValueError, match="minibatch of 6 images cannot give each of 4 devices"):
        gan_loop.per_device_batch(gan_loop.Phase(32, 6, 1.0, 1.0, 1e-3, 1e-3), 4)
