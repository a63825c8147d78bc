"""mask2image trainer: label inputs, one step of every arch, tiny train + exact resume, local
enhancer stages."""

import json

import numpy as np
import pytest
import torch
from lesion_data.labelmap import label_map, one_hot_label_map
from lesion_models.pix2pixhd import Pix2PixHDConfig, Pix2PixHDGenerator
from lesion_train import runs
from lesion_train.distributed import DistEnv
from lesion_train.mask2image import (
    ARCHS,
    Mask2ImageConfig,
    Mask2ImageTrainer,
    build_networks,
    fixed_grid_batch,
    label_input,
    lr_factor,
    train_mask2image,
)
from lesion_train.setup import apply_overrides

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"resolution": 32, "phantom_count": 24, "batch_size": 2, "ngf": 4, "ndf": 4, "n_blocks": 1, "tick_kimg": 0.004,
        "loop.snapshot_ticks": 1, "loop.grid_size": 4, "loop.cpu_threads": 1}


def tiny(**overrides) -> Mask2ImageConfig:
    return apply_overrides(Mask2ImageConfig(), {**TINY, **overrides})


@pytest.fixture(autouse=True)
def phantom_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_label_input_round_trips_label_map_and_boundary():
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:6, 3:7] = 1
    labels = torch.tensor([1, 2])
    x = label_input(masks, labels, num_classes=3)
    assert x.shape == (2, 5, 8, 8)
    assert torch.equal(x[:, :4].argmax(1), label_map(masks, labels))  # one-hot -> label map
    assert torch.equal(x[:, :4].sum(1), torch.ones(2, 8, 8))
    edge = x[:, 4]
    assert edge[0, 2, 3] == 1 and edge[0, 1, 3] == 1 and edge[0, 4, 4] == 0 and edge[0, 0, 0] == 0


def test_lr_is_constant_then_decays_linearly_to_zero():
    assert lr_factor(0, 1000, 0.5) == 1.0 and lr_factor(500, 1000, 0.5) == 1.0
    assert lr_factor(750, 1000, 0.5) == pytest.approx(0.5) and lr_factor(1000, 1000, 0.5) == 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_one_step_of_every_arch_updates_both_networks(arch):
    torch.manual_seed(0)
    config = tiny(arch=arch)
    trainer = Mask2ImageTrainer(config, num_classes=3, env=DistEnv())
    before_g = [p.detach().clone() for p in trainer.G.parameters()]
    before_d = [p.detach().clone() for p in trainer.D.parameters()]
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 10:22] = 1
    batch = {"images": torch.rand(2, 3, 32, 32) * 2 - 1, "masks": masks, "labels": torch.tensor([0, 2])}
    terms = trainer.step(batch)
    assert all(torch.isfinite(v) for v in terms.values())
    expected = {"ours": {"G_feat"}, "pix2pixhd": {"G_feat"}, "pix2pix": {"G_l1"}, "spade": {"G_feat"}}[arch]
    assert expected <= set(terms) and {"G_gan", "D_real", "D_fake"} <= set(terms)
    assert any(not torch.equal(a, b) for a, b in zip(before_g, trainer.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, trainer.D.parameters()))


def test_tiny_train_then_resume_matches_an_uninterrupted_run(tmp_path):
    whole = train_mask2image(tiny(**{"loop.total_kimg": 0.008, "loop.run_root": str(tmp_path / "a")}))
    half = train_mask2image(tiny(**{"loop.total_kimg": 0.004, "loop.run_root": str(tmp_path / "b")}))
    resumed = train_mask2image(tiny(**{"loop.total_kimg": 0.008, "loop.resume": str(half.run_dir)}))
    assert resumed.run_dir == half.run_dir and resumed.kimg == whole.kimg == 0.008
    log = runs.JsonlLog(half.run_dir / runs.LOG_NAME).read()
    assert [r["step"] for r in log] == [2, 4]
    assert {"G_gan", "G_feat", "D_real", "D_fake", "img_per_sec", "peak_mem_mb"} <= set(log[-1])
    assert [p.name for p in runs.list_snapshots(half.run_dir)] == ["000000.004", "000000.008"]  # one per tick
    options = json.loads((half.run_dir / runs.OPTIONS_NAME).read_text())
    assert options["resolved"]["vgg_loss"].startswith("off") and options["resolved"]["gan_mode"] == "lsgan"
    from lesion_models import load_pretrained

    a = load_pretrained(whole.final_snapshot / "G").state_dict()
    b = load_pretrained(resumed.final_snapshot / "G").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert resumed.final_grid.is_file()


def test_resume_from_a_snapshot_of_the_old_trainer_says_so(tmp_path):
    run = train_mask2image(tiny(**{"loop.total_kimg": 0.004, "loop.run_root": str(tmp_path)}))
    path = run.final_snapshot / runs.STATE_NAME
    state = torch.load(path, weights_only=True)
    state["trainer"] = state.pop("recipe")  # the layout before mask2image trained through gan_loop
    torch.save(state, path)
    with pytest.raises(runs.ResumeError, match="older lesion-gan"):
        train_mask2image(tiny(**{"loop.total_kimg": 0.008, "loop.resume": str(run.run_dir)}))


def test_local_enhancer_starts_from_the_global_model_and_can_keep_it_fixed(tmp_path):
    torch.manual_seed(0)
    small = dict(resolution=64, batch_size=1, ngf=4, ndf=4, n_blocks=1, feat_num=0)
    global_g = Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_blocks=1))
    global_g.save_pretrained(tmp_path / "global")
    config = Mask2ImageConfig(arch="pix2pixhd", n_local_enhancers=1, init_global=str(tmp_path / "global"), **small)
    trainer = Mask2ImageTrainer(config, num_classes=3, env=DistEnv())
    for key, value in global_g.global_net.state_dict().items():
        assert torch.equal(trainer.G.global_net.state_dict()[key], value)
    masks = torch.zeros(1, 1, 64, 64)
    masks[..., 16:48, 20:44] = 1
    batch = {"images": torch.rand(1, 3, 64, 64) * 2 - 1, "masks": masks, "labels": torch.tensor([1])}
    frozen = {k: v.clone() for k, v in trainer.G.global_net.state_dict().items()}
    local = [p.detach().clone() for p in trainer.G.local_nets.parameters()]
    trainer.step(batch, train_global=False)
    assert all(torch.equal(frozen[k], v) for k, v in trainer.G.global_net.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(local, trainer.G.local_nets.parameters()))
    trainer.step(batch, train_global=True)
    assert any(not torch.equal(frozen[k], v) for k, v in trainer.G.global_net.state_dict().items())
    with pytest.raises(ValueError, match="local enhancer exists for --arch ours|pix2pixhd only"):
        Mask2ImageConfig(arch="spade", n_local_enhancers=1)


@pytest.mark.slow  # ~1 min on a CPU: inductor compiles G and D
def test_compiled_networks_give_eager_losses_and_gradients(tmp_path):
    torch._dynamo.reset()
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 10:22] = 1
    batch = {"images": torch.rand(2, 3, 32, 32) * 2 - 1, "masks": masks, "labels": torch.tensor([0, 2])}
    trainers, terms = [], []
    for compile in (False, True):
        torch.manual_seed(0)
        config = tiny(compile=compile)
        trainers.append(Mask2ImageTrainer(config, num_classes=3, env=DistEnv()))
        terms.append({k: v.item() for k, v in trainers[-1].step(batch).items()})
    assert isinstance(trainers[1].G_train, torch._dynamo.eval_frame.OptimizedModule)
    assert terms[1] == pytest.approx(terms[0], rel=1e-5)
    for name in ("G", "D"):  # the gradients of the step just taken, to 1e-3 of each tensor's largest;
        # the biases before instance norm get only rounding noise, whose size follows the network's
        # largest gradient, not their own (zero in exact arithmetic): hence the floor at 1e-4 of it
        eager, compiled = (dict(t.models[name].named_parameters()) for t in trainers)
        largest = max(p.grad.abs().max().item() for p in eager.values())
        for key, p in eager.items():
            atol = 1e-3 * p.grad.abs().max().item() + 1e-4 * largest
            torch.testing.assert_close(compiled[key].grad, p.grad, rtol=0, atol=atol, msg=f"{name}.{key}")
    run = train_mask2image(tiny(**{"loop.total_kimg": 0.004, "loop.run_root": str(tmp_path)}, compile=True))
    from lesion_models import load_pretrained

    for name in ("G", "D"):  # plain modules: no ``_orig_mod.`` prefixes from the compiled wrapper
        assert load_pretrained(run.final_snapshot / name).state_dict().keys() == trainers[0].models[name].state_dict().keys()


def test_ours_upsamples_by_resize_conv_and_pix2pixhd_by_transposed_conv():
    def decoder_layers(**options):
        G, _ = build_networks(tiny(**options), 3)
        return {type(m).__name__ for m in G.global_net.up.modules()}

    assert "ConvTranspose2d" not in decoder_layers(arch="ours") and "Upsample" in decoder_layers(arch="ours")
    assert "ConvTranspose2d" in decoder_layers(arch="pix2pixhd")  # NVIDIA's
    assert "ConvTranspose2d" in decoder_layers(arch="ours", upsample="transpose")
    with pytest.raises(ValueError, match="--upsample 'resize'"):
        Mask2ImageConfig(arch="spade", upsample="resize")


def test_runs_from_before_the_upsample_option_keep_transposed_convolutions():
    old = Mask2ImageConfig.upgrade_options({"arch": "ours", "loop": {}})
    assert old["upsample"] == "transpose"
    assert "upsample" not in Mask2ImageConfig.upgrade_options({"arch": "spade", "loop": {}})


def test_feature_bank_holds_current_encodings_of_every_class(tmp_path):
    # Variations of one mask draw region features from the bank, so each class needs many distinct
    # entries, all from the encoder saved with them (not the last minibatch's one or two).
    run = train_mask2image(tiny(**{"loop.total_kimg": 0.004, "loop.run_root": str(tmp_path)}))
    from lesion_data.store import PreparedStore
    from lesion_models import load_pretrained

    G = load_pretrained(run.final_snapshot / "G")
    store = PreparedStore(runs.read_options(run.run_dir)["resolved"]["store"])
    per_class = np.bincount(store.labels, minlength=3)
    assert G.bank_count.tolist() == [len(store.labels), *per_class.tolist()]
    for label, count in enumerate([len(store.labels), *per_class]):
        entries = G.feature_bank[label, : min(count, G.config.feature_bank_size)]
        assert len(torch.unique(entries, dim=0)) == len(entries)
    batch = {k: v[:1] for k, v in fixed_grid_batch(store, tiny(), "cpu").items()}
    onehot = one_hot_label_map(batch["masks"], batch["labels"], 3)
    region = G.encoder(batch["images"], onehot)[0, :, onehot[0, 0] > 0][:, 0]  # the image's skin feature
    assert any(torch.allclose(region, entry, atol=1e-5) for entry in G.feature_bank[0])
