"""The augment_eval experiment: splits, synthetic sources, the held-out guarantee, and the app."""

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from lesion_data.phantom import generate_phantoms
from lesion_models import Pretrained, register
from lesion_train import augment_eval as ae
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_split_is_stratified_disjoint_and_scarce_on_request():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    split = ae.split_indices(labels, 0.3, 0.1, real_train=0, seed=0)
    sets = [set(split[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == 100
    assert list(np.bincount(labels[split["test"]])) == [21, 6, 3]
    scarce = ae.split_indices(labels, 0.3, 0.1, real_train=20, seed=0)
    np.testing.assert_array_equal(scarce["test"], split["test"])  # scarcity never moves the test split
    assert set(scarce["train"]) <= sets[0] and len(scarce["train"]) == 20
    assert all(np.bincount(labels[scarce["train"]], minlength=3) > 0)


def test_synthetic_counts_follow_ratio_or_fill_to_the_largest_class():
    labels = np.array([0] * 100 + [1] * 30 + [2] * 20)
    assert ae.synthetic_counts(labels, "r0.5", 3) == [50, 15, 10]
    assert ae.synthetic_counts(labels, "r0", 3) == [0, 0, 0]
    assert ae.synthetic_counts(labels, ae.BALANCE, 3) == [0, 70, 80]


def test_held_out_split_never_receives_synthetic_images():
    real, _, labels = generate_phantoms(90, 32, seed=5)
    marker = np.full((300, 32, 32, 3), 7, np.uint8)  # no phantom is a flat 7-valued square
    source = ae.PoolSource(marker, np.arange(300) % 3, "marker")
    split = ae.split_indices(labels, 0.3, 0.1, 0, seed=1)
    seen_tests = []
    for condition in ("r0", "r2", ae.BALANCE):
        data = ae.trial_data(real, labels, split, source, condition, seed=0, num_classes=3)
        is_marker = (data["train_images"] == 7).all(axis=(1, 2, 3))
        np.testing.assert_array_equal(is_marker, data["train_origin"] < 0)
        assert is_marker.sum() == data["n_synthetic"] == sum(ae.synthetic_counts(labels[split["train"]], condition, 3))
        np.testing.assert_array_equal(data["test_images"], real[split["test"]])
        np.testing.assert_array_equal(data["val_images"], real[split["val"]])
        assert not (data["test_images"] == 7).all(axis=(1, 2, 3)).any()
        assert not set(data["train_origin"][data["train_origin"] >= 0]) & set(split["test"])
        seen_tests.append(data["test_labels"])
    assert all((t == seen_tests[0]).all() for t in seen_tests)


def test_folder_and_csv_sources(tmp_path):
    colours = {"nevus": 40, "melanoma": 120, "seborrheic_keratosis": 200}
    for name, value in colours.items():
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (48, 40), (value, value, value)).save(tmp_path / "folder" / name / f"{i}.png")
    source = ae.open_synthetic(str(tmp_path / "folder"), 16)
    images, labels = source.draw([2, 1, 3], seed=0)
    assert images.shape == (6, 16, 16, 3) and list(np.bincount(labels)) == [2, 1, 3]
    for image, label in zip(images, labels, strict=True):
        assert (image == list(colours.values())[label]).all()  # each image kept its class
    rows = "image,label\n" + "".join(f"folder/melanoma/{i}.png,melanoma\nfolder/nevus/{i}.png,0\n" for i in range(3))
    (tmp_path / "synth.csv").write_text(rows)
    source = ae.open_synthetic(str(tmp_path / "synth.csv"), 16)
    images, labels = source.draw([1, 2, 0], seed=1)
    assert sorted(labels) == [0, 1, 1] and (images[labels == 1] == 120).all() and (images[labels == 0] == 40).all()
    with pytest.raises(ValueError, match="no synthetic images of class seborrheic"):
        source.draw([0, 0, 1], seed=0)
    with pytest.raises(FileNotFoundError, match="synthetic source not found"):
        ae.open_synthetic(str(tmp_path / "nowhere"), 16)


@dataclass
class TinyGeneratorConfig:
    z_dim: int = 4
    num_classes: int = 3
    resolution: int = 8


@register
class TinyConditionalGenerator(torch.nn.Module, Pretrained):
    """Stand-in for a class-conditional PGGAN: G(z, labels) -> [-1, 1] images; class k paints
    every pixel (k - 1) so the test can read the label back from the image."""

    config_class = TinyGeneratorConfig

    def __init__(self, config):
        super().__init__()
        self.config, self.z_dim, self.num_classes, self.resolution = config, config.z_dim, config.num_classes, config.resolution
        self.scale = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z, labels):
        level = (labels.float() - 1).view(-1, 1, 1, 1) + self.scale * z[:, :1, None, None]
        return level.expand(-1, 3, self.resolution, self.resolution)


def test_generator_source_from_model_or_run_directory(tmp_path):
    generator = TinyConditionalGenerator(TinyGeneratorConfig())
    generator.save_pretrained(tmp_path / "run" / "snapshots" / "000010" / "G_ema")
    (tmp_path / "run" / "snapshots" / "000010" / "training_state.pt").write_bytes(b"")
    for spec in (tmp_path / "run" / "snapshots" / "000010" / "G_ema", tmp_path / "run"):
        source = ae.open_synthetic(str(spec), 32)
        images, labels = source.draw([2, 0, 3], seed=4)
        assert images.shape == (5, 32, 32, 3) and list(labels) == [0, 0, 2, 2, 2]
        np.testing.assert_array_equal(images[:, 0, 0, 0], [0, 0, 255, 255, 255])
    unconditional = TinyConditionalGenerator(TinyGeneratorConfig(num_classes=0))
    with pytest.raises(ValueError, match="unconditional"):
        ae.open_synthetic(str(unconditional.save_pretrained(tmp_path / "uncond")), 32)


def _app(*args, env):
    return subprocess.run([sys.executable, str(ROOT / "apps" / "augment_eval"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)


def _load_app():
    spec = importlib.util.spec_from_file_location("augment_eval_app", ROOT / "apps" / "augment_eval" / "__main__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_app_end_to_end_then_resume(tmp_path, monkeypatch):
    import os

    # One intra-op thread: on a shared, oversubscribed CPU two run several times slower.
    env = {**os.environ, "LESION_GAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    tiny = ["--phantom-n", "96", "--real-train", "24", "--ratios", "0,1", "--balance", "--seeds", "1",
            "--kimg", "0.008", "--batch-size", "8", "--eval-every-kimg", "0.008", "--quality-n", "0",
            "--out", str(tmp_path / "runs")]
    done = _app(*tiny, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert {(r["condition"], r["seed"]) for r in records} == {("r0", 0), ("r1", 0), ("balance", 0)}
    split = np.load(run / "splits.npz")
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    assert all(r["n"] == len(split["test"]) for r in records)  # every trial is scored on the real test split
    assert {r["n_synthetic"] for r in records if r["condition"] == "r1"} == {24}
    table = (run / "table.md").read_text()
    assert "balance classes" in table and "ratio 1" in table and table in done.stdout
    assert Image.open(run / "auc_vs_ratio.png").size == (640, 420)
    assert (run / "grids" / "synthetic.png").is_file()
    assert "| phantom:1 | n/a | n/a | ratio 1 |" in table and not (run / "quality.jsonl").exists()

    (run / "table.md").unlink()
    monkeypatch.setenv("LESION_GAN_CACHE", env["LESION_GAN_CACHE"])
    again = CliRunner().invoke(_load_app(), ["--resume", str(run)])  # in-process: every trial is done
    assert again.exit_code == 0, again.output
    assert len((run / "results.jsonl").read_text().splitlines()) == 3  # nothing retrained
    assert (run / "table.md").read_text() == table


def test_app_rejects_bad_options_in_one_line(tmp_path):
    result = CliRunner().invoke(_load_app(), ["--classifiers", "vgg16", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "vgg16" in result.output and result.output.count("\n") <= 3


@pytest.mark.parametrize("kind", ["mask2image", "mask2image-deformed"])
def test_mask2image_source_paints_training_masks(tmp_path, kind):
    from lesion_train.mask2image import Mask2ImageConfig, build_networks

    G, _ = build_networks(Mask2ImageConfig(arch="pix2pix", resolution=32, ngf=4), num_classes=3)
    G.save_pretrained(tmp_path / "G")
    _, masks, labels = generate_phantoms(12, 32, seed=2, balanced=True)
    source = ae.open_mask2image(f"{kind}:{tmp_path / 'G'}", masks, labels, 32, "cpu")
    images, drawn = source.draw([2, 1, 2], seed=0)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8 and list(drawn) == [0, 0, 1, 2, 2]
    with pytest.raises(ValueError, match="no masks"):
        ae.open_mask2image(f"{kind}:{tmp_path / 'G'}", None, labels, 32, "cpu")


def test_generator_source_with_a_real_conditional_pggan(tmp_path):
    from lesion_models.pggan import PGGANConfig, PGGANGenerator

    G = PGGANGenerator(PGGANConfig(resolution=16, num_classes=3, fmap_base=64, fmap_max=16))
    source = ae.open_synthetic(str(G.save_pretrained(tmp_path / "G_ema")), 32)
    first, labels = source.draw([1, 2, 1], seed=0)
    again, _ = source.draw([1, 2, 1], seed=0)
    other, _ = source.draw([1, 2, 1], seed=1)
    assert first.shape == (4, 32, 32, 3) and list(labels) == [0, 1, 1, 2]
    np.testing.assert_array_equal(first, again)  # reproducible per seed
    assert (first != other).any()  # and fresh latents for another seed


@pytest.mark.slow
def test_torchrun_two_processes_write_one_experiment(tmp_path):
    import os

    env = {**os.environ, "LESION_GAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    tiny = ["--phantom-n", "96", "--real-train", "24", "--ratios", "0,1", "--seeds", "1", "--kimg", "0.008",
            "--batch-size", "8", "--eval-every-kimg", "0.008", "--out", str(tmp_path / "runs")]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "apps" / "augment_eval"), *tiny], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()  # rank 0 alone creates and writes the experiment
    assert len((run / "results.jsonl").read_text().splitlines()) == 2
    assert done.stdout.count("experiment:") == 1
    assert (run / "table.md").is_file() and (run / "trials" / "resnet18-r1-s0" / "best").is_dir()


def test_sources_are_labelled_and_share_one_real_only_baseline():
    assert ae.source_label("early=runs/a/snapshots/000004.000") == ("early", "runs/a/snapshots/000004.000")
    assert ae.source_label("runs/20260101-pggan/snapshots/000014.016")[0] == "20260101-pggan@000014.016"
    assert ae.source_label("mask2image:runs/20260101-ours") == ("mask2image:20260101-ours", "mask2image:runs/20260101-ours")
    assert ae.source_label("phantom:3") == ("phantom:3", "phantom:3")
    assert ae.source_label("runs/x=y/model")[0] == "model"  # a path with "=" is not a label
    config = ae.AugmentEvalConfig(synthetic=("a=phantom:1", "b=phantom:2"), ratios=(0, 1), balance=True, seeds=2)
    trials = config.trials()
    assert [t for t in trials if t[2] == "r0"] == [("resnet18", None, "r0", 0), ("resnet18", None, "r0", 1)]
    assert {(t[1], t[2]) for t in trials if t[2] != "r0"} == {("a", "r1"), ("b", "r1"), ("a", "balance"), ("b", "balance")}
    assert len(trials) == 2 + 2 * 2 * 2
    assert ae.trial_name("resnet18", "a", "r1", 0, config) == "resnet18-a-r1-s0"
    single = ae.AugmentEvalConfig(synthetic="phantom:1")
    assert single.synthetic == ("phantom:1",) and ae.trial_name("resnet18", "phantom:1", "r1", 0, single) == "resnet18-r1-s0"
    # A record written before sources were recorded belongs to the single source.
    assert ae.trial_key({"classifier": "resnet18", "condition": "r1", "seed": 0}, single) == ("resnet18", "phantom:1", "r1", 0)
    with pytest.raises(ValueError, match="distinct labels"):
        ae.AugmentEvalConfig(synthetic=("x=phantom:1", "x=phantom:2"))


def test_a_generator_trained_on_held_out_images_is_refused(tmp_path):
    from lesion_data.store import write_store

    images, masks, labels = generate_phantoms(12, 8, seed=0, balanced=True)
    ids = [f"img{i}" for i in range(12)]
    for name, rows in (("leaky", range(12)), ("clean", range(6))):
        write_store(tmp_path / name / "store", images[list(rows)], masks[list(rows)], labels[list(rows)],
                    ("nevus", "melanoma", "seborrheic_keratosis"), source={}, preprocessing={},
                    ids=[ids[i] for i in rows])
        run = tmp_path / name / "run"
        (run / "snapshots" / "000001.000" / "G_ema").mkdir(parents=True)
        (run / "training_options.json").write_text(json.dumps({"data": str(tmp_path / name / "store"), "resolution": 8}))
    held_out = {"img7", "img9"}
    with pytest.raises(ValueError, match="trained on 2 of the 2 real validation/test images"):
        ae.check_held_out("leaky", str(tmp_path / "leaky" / "run" / "snapshots" / "000001.000" / "G_ema"), held_out)
    with pytest.raises(ValueError, match="leaky"):
        ae.check_held_out("leaky", f"mask2image:{tmp_path / 'leaky' / 'run'}", held_out)
    ae.check_held_out("clean", str(tmp_path / "clean" / "run"), held_out)
    ae.check_held_out("oracle", "phantom:1", held_out)


def test_exported_training_split_is_the_experiments_training_split(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path / "cache"))
    config = ae.AugmentEvalConfig(phantom_n=60, resolution=16, real_train=20)
    exported = ae.export_training_split(config, tmp_path / "train")
    real = ae.open_real(config)
    split = ae.experiment_split(config, real)
    assert exported.ids == [real.ids[i] for i in split["train"]] and len(exported) == len(split["train"])
    np.testing.assert_array_equal(exported.images(16), real.images(16)[split["train"]])
    np.testing.assert_array_equal(exported.labels, np.asarray(real.labels)[split["train"]])
    assert exported.has_masks
    assert not set(exported.ids) & {real.ids[i] for i in np.concatenate([split["val"], split["test"]])}


def test_app_with_two_sources_reports_their_quality_beside_their_rows(tmp_path):
    import os

    env = {**os.environ, "LESION_GAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    tiny = ["--phantoms", "96", "--real-train", "24", "--ratios", "0,1", "--seeds", "1", "--kimg", "0.008",
            "--batch", "8", "--eval-every-kimg", "0.008", "--quality-n", "24", "--out", str(tmp_path / "runs"),
            "--synthetic", "oracle=phantom:1,other=phantom:2"]
    done = _app(*tiny, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted((r["source"] or "", r["condition"]) for r in records) == [("", "r0"), ("oracle", "r1"), ("other", "r1")]
    quality = [json.loads(line) for line in (run / "quality.jsonl").read_text().splitlines()]
    assert [q["source"] for q in quality] == ["oracle", "other"]
    assert all(q["num_fake"] == 24 and q["fid"] > 0 and np.isfinite(q["kid"]) for q in quality)
    rows = [line for line in (run / "table.md").read_text().splitlines() if line.startswith("| resnet18")]
    assert rows[0].startswith("| resnet18 | none (real only) | — | — | ratio 0 |")
    for row, q in zip(rows[1:], quality, strict=True):
        assert row.startswith(f"| resnet18 | {q['source']} | {q['fid']:.1f} | {q['kid']:.3f} | ratio 1 |")
    assert (run / "grids" / "synthetic-oracle.png").is_file() and (run / "grids" / "synthetic-other.png").is_file()
    assert Image.open(run / "delta_vs_fid.png").size == (420, 260)
    trial_dirs = sorted(p.name for p in (run / "trials").iterdir())
    assert trial_dirs == ["resnet18-oracle-r1-s0", "resnet18-other-r1-s0", "resnet18-r0-s0"]

    again = _app("--resume", str(run), env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len((run / "results.jsonl").read_text().splitlines()) == 3
    assert len((run / "quality.jsonl").read_text().splitlines()) == 2


def test_app_refuses_a_generator_that_saw_the_test_split_before_writing_anything(tmp_path, monkeypatch):
    import os

    from lesion_data.prepare import open_or_prepare

    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    everything = open_or_prepare(None, 16, phantom_count=96, progress=False)  # the experiment's real data
    run = tmp_path / "gen"
    TinyConditionalGenerator(TinyGeneratorConfig()).save_pretrained(run / "snapshots" / "000001.000" / "G_ema")
    (run / "training_options.json").write_text(json.dumps({"data": str(everything.path), "resolution": 16}))
    done = _app("--phantoms", "96", "--resolution", "16", "--ratios", "0,1", "--out", str(tmp_path / "runs"),
                "--synthetic", f"leaky={run}", env=env)
    assert done.returncode != 0 and "leaky: its generator trained on" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()
