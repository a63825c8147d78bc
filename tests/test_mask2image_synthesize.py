"""Synthesis from mask files written to tmp_path (any size, unseen mask/class pairs), variations,
CSV classes, clear errors, mask consistency, and the app through a subprocess."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lesion_models.pix2pixhd import Pix2PixHDConfig, Pix2PixHDGenerator
from lesion_models.spade import SPADEGenerator, SPADEGeneratorConfig
from lesion_models.unet import UNetSegmenter, UNetSegmenterConfig
from lesion_train import runs
from lesion_train.gan_loop import LoopConfig
from lesion_train.mask2image import Mask2ImageConfig, SynthesisError, class_fidelity, synthesize, train_mask2image
from lesion_train.segmenter import mask_consistency, segmentation_loss
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny 'ours' run (feature encoder on, so variations exist)."""
    root = tmp_path_factory.mktemp("m2i")
    config = Mask2ImageConfig(resolution=32, phantom_count=16, batch_size=2, ngf=4, ndf=4, n_blocks=1, tick_kimg=0.004,
                              loop=LoopConfig(name="", total_kimg=0.004, minibatch_repeats=1, grid_size=2,
                                              run_root=str(root / "runs"), cpu_threads=1))
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LESION_GAN_CACHE", str(root / "cache"))
        run = train_mask2image(config)
    torch.set_num_threads(threads)
    # Four steps leave the feature bank with two near-identical entries; spread it so that the
    # synthesis plumbing (seeded draws per variation) is what the tests see.
    g_dir = run.final_snapshot / "G"
    G = Pix2PixHDGenerator.from_pretrained(g_dir)
    G.feature_bank.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    G.bank_count.fill_(G.config.feature_bank_size)
    G.save_pretrained(g_dir)
    return run.run_dir


@pytest.fixture
def mask_dir(tmp_path):
    """Masks that match no training image: odd sizes, 0/255, a ring and a bar."""
    folder = tmp_path / "masks"
    folder.mkdir()
    yy, xx = np.mgrid[:50, :70]
    ring = (np.hypot(yy - 25, xx - 35) < 20) & (np.hypot(yy - 25, xx - 35) > 8)
    Image.fromarray((ring * 255).astype(np.uint8)).save(folder / "ISIC_9999999_segmentation.png")
    bar = np.zeros((40, 40), np.uint8)
    bar[15:25, 5:35] = 255
    Image.fromarray(bar).save(folder / "bar.png")
    return folder


def test_unseen_masks_with_any_class_and_variations(trained_run, mask_dir, tmp_path):
    result = synthesize(trained_run, mask_dir, tmp_path / "out", "seborrheic_keratosis", variations=2, seed=3)
    names = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert names == ["ISIC_9999999_segmentation__seborrheic_keratosis__v0.png",
                     "ISIC_9999999_segmentation__seborrheic_keratosis__v1.png",
                     "bar__seborrheic_keratosis__v0.png", "bar__seborrheic_keratosis__v1.png"]
    first = np.asarray(Image.open(tmp_path / "out/images/bar__seborrheic_keratosis__v0.png"))
    second = np.asarray(Image.open(tmp_path / "out/images/bar__seborrheic_keratosis__v1.png"))
    assert first.shape == (32, 32, 3) and not np.array_equal(first, second)
    assert result.images.shape == (4, 3, 32, 32) and result.masks.shape == (4, 1, 32, 32)
    rows = list(csv.DictReader(open(tmp_path / "out" / "synthesized.csv")))
    assert len(rows) == 4 and rows[0]["mask"] == "masks/ISIC_9999999_segmentation.png"
    assert np.asarray(Image.open(tmp_path / "out/masks/bar.png")).max() == 255
    again = synthesize(trained_run, mask_dir, tmp_path / "again", "seborrheic_keratosis", variations=2, seed=3)
    torch.testing.assert_close(again.images, result.images)  # seeded


def test_classes_from_isic_csv(trained_run, mask_dir, tmp_path):
    table = tmp_path / "gt.csv"
    table.write_text("image_id,melanoma,seborrheic_keratosis\nISIC_9999999,1.0,0.0\nbar,0.0,0.0\n")
    result = synthesize(runs.latest_snapshot(trained_run), mask_dir, tmp_path / "out", "from-csv", table)
    assert result.labels.tolist() == [1, 0]  # melanoma, nevus (sorted mask order: ISIC..., bar)
    table.write_text("image_id,class\nbar,melanoma\n")
    with pytest.raises(SynthesisError, match=r"gt.csv: no class for masks \['ISIC_9999999_segmentation'\]"):
        synthesize(trained_run, mask_dir, tmp_path / "o2", "from-csv", table)


def test_clear_errors(trained_run, mask_dir, tmp_path):
    with pytest.raises(SynthesisError, match="unknown class 'mole'"):
        synthesize(trained_run, mask_dir, tmp_path / "o", "mole")
    with pytest.raises(SynthesisError, match="empty: no mask images"):
        (tmp_path / "empty").mkdir()
        synthesize(trained_run, tmp_path / "empty", tmp_path / "o", "nevus")
    (mask_dir / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SynthesisError, match="broken.png: unreadable mask"):
        synthesize(trained_run, mask_dir, tmp_path / "o", "nevus")
    spade = SPADEGenerator(SPADEGeneratorConfig(nf=2, hidden=4)).save_pretrained(tmp_path / "spade")
    (mask_dir / "broken.png").unlink()
    with pytest.raises(SynthesisError, match="deterministic; --variations needs"):
        synthesize(spade, mask_dir, tmp_path / "o", "nevus", variations=2, resolution=32)
    with pytest.raises(SynthesisError, match="give --resolution"):
        synthesize(spade, mask_dir, tmp_path / "o", "nevus")
    bare = Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_blocks=1)).save_pretrained(tmp_path / "hd")
    assert synthesize(bare, mask_dir, tmp_path / "o", "nevus", resolution=48).images.shape == (2, 3, 48, 48)


def test_mask_consistency_scores_a_perfect_and_a_useless_segmenter():
    torch.manual_seed(0)
    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, 4:12, 4:12] = 1
    images = masks.expand(-1, 3, -1, -1) * 2 - 1  # lesion white, skin black
    seg = UNetSegmenter(UNetSegmenterConfig(base=2, depth=2))
    opt = torch.optim.Adam(seg.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        segmentation_loss(seg(images), masks).backward()
        opt.step()
    assert mask_consistency(seg, images, masks)["dice"] > 0.95
    assert mask_consistency(seg, -images, masks)["dice"] < 0.5  # inverted images: layout not obeyed


def test_class_fidelity_compares_predictions_with_requested_classes():
    from lesion_models.classifier import ClassifierConfig, LesionClassifier

    torch.manual_seed(0)
    clf = LesionClassifier(ClassifierConfig(resolution=32)).eval()
    images = torch.rand(6, 3, 48, 48) * 2 - 1
    predicted = clf.predict_proba(torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear",
                                                                  antialias=True)).argmax(1)
    labels = predicted.clone()
    labels[:2] = (labels[:2] + 1) % 3  # two wrong on purpose
    report = class_fidelity(clf, images, labels, ["nevus", "melanoma", "seborrheic_keratosis"])
    assert report["accuracy"] == pytest.approx(4 / 6) and report["count"] == 6
    with pytest.raises(SynthesisError, match="classifier classes"):
        class_fidelity(clf, images, labels, ["a", "b", "c"])


def test_synthesize_app_with_segmenter(trained_run, mask_dir, tmp_path):
    seg = UNetSegmenter(UNetSegmenterConfig(base=2, depth=2)).save_pretrained(tmp_path / "seg")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "apps/mask2image_synthesize"), str(trained_run), "--masks", str(mask_dir),
         "--class", "melanoma", "--out", str(tmp_path / "out"), "--variations", "2", "--segmenter", str(seg)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 images in" in done.stdout and "mask consistency: Dice" in done.stdout
    report = json.loads((tmp_path / "out" / "mask_consistency.json").read_text())
    assert report["count"] == 4 and 0 <= report["dice"] <= 1


def test_synthesize_app_class_fidelity_in_process(trained_run, mask_dir, tmp_path):
    from click.testing import CliRunner
    from lesion_models.classifier import ClassifierConfig, LesionClassifier

    clf = LesionClassifier(ClassifierConfig(resolution=32)).save_pretrained(tmp_path / "clf")
    spec = importlib.util.spec_from_file_location("app_synth", ROOT / "apps/mask2image_synthesize/__main__.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    result = CliRunner().invoke(app.main, [str(trained_run), "--masks", str(mask_dir), "--class", "nevus",
                                           "--out", str(tmp_path / "out"), "--classifier", str(clf)])
    assert result.exit_code == 0, result.output
    fidelity = json.loads((tmp_path / "out" / "class_fidelity.json").read_text())
    assert fidelity["count"] == 2 and set(fidelity["per_class"]) == {"nevus"}
    bad = CliRunner().invoke(app.main, [str(trained_run), "--masks", str(mask_dir), "--class", "mole",
                                        "--out", str(tmp_path / "out")])
    assert bad.exit_code == 1 and "unknown class 'mole'" in bad.output


def test_segmenter_train_app_reports_held_out_dice(tmp_path, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("app_seg", ROOT / "apps/segmenter_train/__main__.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    result = CliRunner().invoke(app.main, ["--out", str(tmp_path / "seg"), "--resolution", "32", "--kimg", "0.032",
                                           "--batch", "8", "--base", "2", "--threads", "1", "--phantoms", "32"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert report["evaluated_on"] == "held-out phantoms" and report["count"] == 64 and 0 <= report["dice"] <= 1
    assert isinstance(UNetSegmenter.from_pretrained(tmp_path / "seg"), UNetSegmenter)
