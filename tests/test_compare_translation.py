"""apps/compare_translation (tiny budgets, in process) and the pieces both comparison apps share:
checkpoint selection, the per-checkpoint table and curves, the diversity of variations."""

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from lesion_train import compare, compare_translation, runs
from PIL import Image


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch, one_thread):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _snapshots(run: Path, kimgs):
    for kimg in kimgs:
        runs.save_snapshot(run, kimg, {}, {"nimg": round(kimg * 1000)})


def test_checkpoints_are_the_snapshots_nearest_each_fraction_by_images_seen(tmp_path):
    _snapshots(tmp_path / "a", [1, 2.016, 3, 3.968])
    picked = compare.checkpoint_snapshots(tmp_path / "a", 4.0, (0.25, 0.5, 1.0))
    assert [(f, k) for f, _, k in picked] == [(0.25, 1), (0.5, 2.016), (1.0, 3.968)]
    # One snapshot nearest two fractions is listed once, for the larger; the chosen ones keep their order.
    _snapshots(tmp_path / "b", [0.5, 0.9, 1.9])
    picked = compare.checkpoint_snapshots(tmp_path / "b", 2.0, (0.1, 0.25, 0.5, 1.0))
    assert [(f, k) for f, _, k in picked] == [(0.25, 0.5), (0.5, 0.9), (1.0, 1.9)]
    assert [s for _, s, _ in picked] == sorted(s for _, s, _ in picked)
    with pytest.raises(ValueError, match="checkpoints"):
        compare.CompareConfig(checkpoints=(0.5, 1.5))


def test_table_and_curves_show_every_checkpoint(tmp_path):
    rows = [{"arch": arch, "checkpoint": f, "kimg": 4 * f, "resolution": 32, "train_seconds": 60 * f,
             "num_real": 10, "num_fake": 10, "results": {"swd_avg": value, "msssim_real": 0.4, "kid_std": 0.0}, "notes": []}
            for arch, values in (("a", (3.0, 2.0, 1.0)), ("b", (2.5, 2.2, 2.1))) for f, value in zip((0.25, 0.5, 1.0), values)]
    table = compare.format_markdown(rows, ["a note"])
    final, every = table.split("Every checkpoint")
    assert "| a | 4 | 32 | 1.0 | 1.0000 |" in final and "| a | 1 |" not in final
    blocks = [line for line in every.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert [line.split(" | ")[1] for line in blocks] == ["1", "1", "2", "2", "4", "4"]  # grouped by checkpoint
    assert "- a note" in table
    path = compare.write_curves(tmp_path / "curves.png", rows)
    assert Image.open(path).size == (420, 260)  # one panel: swd_avg (no real-only reference, no spread)


def test_diversity_of_variations():
    same = torch.rand(1, 3, 3, 32, 32).expand(4, -1, -1, -1, -1) * 2 - 1
    assert compare_translation.variation_msssim(same) == pytest.approx(1.0)
    different = torch.rand(4, 3, 3, 32, 32) * 2 - 1
    assert compare_translation.variation_msssim(different) < 0.5


def test_every_architecture_gets_the_same_data_budget_seed_and_widths(tmp_path):
    config = compare_translation.TranslationCompareConfig(budget_kimg=2.0, seed=5, ngf=8, out=str(tmp_path),
                                                          overrides={"spade": {"lr_d": 1e-3}})
    trains = {a: compare_translation.train_config(config, a, "STORE") for a in compare_translation.ARCHS}
    assert {(t.data, t.loop.total_kimg, t.loop.seed, t.ngf, t.ndf, t.resolution, t.batch_size) for t in trains.values()} == {
        ("STORE", 2.0, 5, 8, 16, 32, 8)}
    assert {t.tick_kimg for t in trains.values()} == {0.5} and trains["spade"].lr_d == 1e-3
    clash = compare_translation.TranslationCompareConfig(overrides={"ours": {"loop.total_kimg": 9}})
    with pytest.raises(ValueError, match="shared by every architecture"):
        compare_translation.train_config(clash, "ours", "STORE")
    with pytest.raises(ValueError, match="archs"):
        compare_translation.TranslationCompareConfig(archs=("cyclegan",))


TINY = ["--kimg", "0.064", "--phantoms", "64", "--metrics", "swd,msssim", "--segmenter-kimg", "0.064",
        "--classifier-kimg", "0.064", "--variations", "2", "--variation-masks", "4", "--threads", "1", "--quiet"]


@pytest.mark.slow  # 20-60 s: four trainings, a segmenter and a classifier
def test_app_on_phantoms_writes_table_json_figures_and_resumes(tmp_path, load_app):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(load_app("compare_translation").main, [*TINY, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert [r["arch"] for r in doc["rows"]] == list(compare_translation.ARCHS)
    for row in doc["rows"]:
        r = row["results"]
        assert row["kimg"] == 0.064 and r["swd_avg"] > 0 and 0 <= r["mask_dice"] <= 1 and 0 <= r["class_accuracy"] <= 1
        assert 0 < r["variation_msssim"] <= 1 + 1e-6 and "class_accuracy_nevus" in r
    for arch in ("pix2pixhd", "spade"):  # no noise source: every variation is the same image
        assert doc["rows"][compare_translation.ARCHS.index(arch)]["results"]["variation_msssim"] == pytest.approx(1.0)
    assert set(doc["ceilings"]) >= {"segmenter_dice_real", "classifier_accuracy_real"}
    # A tick at the smallest checkpoint and a snapshot per tick: every arch at 25/50/100% of the budget.
    assert [(r["arch"], r["kimg"]) for r in doc["checkpoints"]] == [
        (arch, kimg) for arch in compare_translation.ARCHS for kimg in (0.016, 0.032, 0.064)]
    table = (out / "table.md").read_text()
    assert all(f"| {arch} |" in table for arch in compare_translation.ARCHS) and "mask_dice" in table
    figure = Image.open(out / "comparison.png")
    assert figure.height >= 8 * 34 and figure.width >= 6 * 34  # mask | real | four methods, eight masks
    assert Image.open(out / "curves.png").width > 0
    # No model saw the held-out split: the training store and the test store share no image.
    train_ids = json.loads((Path(doc["train_store"]) / "ids.json").read_text())
    test_ids = json.loads((Path(doc["test_store"]) / "ids.json").read_text())
    assert test_ids and not set(train_ids) & set(test_ids)
    # A re-run trains nothing and evaluates nothing again.
    before = sorted(p.name for p in (out / "runs").iterdir())
    evaluated = (out / "evaluations.jsonl").read_text()
    again = CliRunner().invoke(load_app("compare_translation").main, [*TINY, "--out", str(out)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == before
    assert (out / "evaluations.jsonl").read_text() == evaluated
    assert json.loads((out / "results.json").read_text())["rows"] == doc["rows"]


ISIC = os.environ.get("LESION_SAMPLE_ISIC2017")


@pytest.mark.slow  # 5-20 s: prepares the sample at 32 px, then as above with two architectures
@pytest.mark.skipif(not ISIC or not Path(ISIC).is_dir(), reason="LESION_SAMPLE_ISIC2017 not set")
def test_app_on_the_isic_sample(tmp_path, load_app):
    out = tmp_path / "cmp"
    args = [*TINY, "--data", ISIC, "--archs", "ours,pix2pix", "--out", str(out)]
    result = CliRunner().invoke(load_app("compare_translation").main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert [r["arch"] for r in doc["rows"]] == ["ours", "pix2pix"]
    assert set(doc["rows"][0]["results"]) >= {"mask_dice", "class_accuracy_melanoma", "variation_msssim", "swd_avg"}


@pytest.mark.parametrize("real, fake, says", [(64, 64, "kid_std is 0"), (210, 1000, "subsets have 210 images"),
                                                (5000, 5000, None)])
def test_kid_note_matches_the_subset_sizes(real, fake, says):
    rows = [{"num_real": real, "num_fake": fake, "results": {"kid": 0.1}}]
    (note,) = compare._inception_note(rows)
    assert ("kid_std is 0" in note) == (says == "kid_std is 0")
    assert says is None and "subsets" not in note or says in note
