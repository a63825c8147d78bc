"""apps/compare_unconditional on a tiny budget (in process), and the fairness rules of lesion_train.compare."""

import json

import pytest
import torch
from click.testing import CliRunner
from lesion_metrics import registry
from lesion_train import compare
from PIL import Image


class StandIn(torch.nn.Module):
    """Cheap 'pool3' features: per-channel means of 4x4 cells (48-d)."""

    def forward(self, images):
        return {"pool3": torch.nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1)}


@pytest.fixture(autouse=True)
def phantom_cache(tmp_path_factory, monkeypatch, one_thread):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_same_budget_seed_and_resolution_for_every_arch():
    config = compare.CompareConfig(budget_kimg=7.0, seed=3, resolution=32)
    trains = {arch: compare.train_config(config, arch) for arch in compare.ARCHS}
    assert {(t.loop.total_kimg, t.loop.seed, t.resolution) for t in trains.values()} == {(7.0, 3, 32)}
    s = trains["pggan"].schedule  # compressed: 32 px is fully faded in after 6/7 of the budget
    assert s.stabilize_kimg == s.transition_kimg == pytest.approx(1.5)
    full = compare.train_config(compare.CompareConfig(budget_kimg=14.0), "pggan").schedule
    assert full.stabilize_kimg == 3.0  # the cpu preset already fits 14 kimg
    with pytest.raises(ValueError, match="archs"):
        compare.CompareConfig(archs=("wgan",))


def test_app_on_a_tiny_budget_writes_table_json_and_figure(tmp_path, monkeypatch, load_app):
    out = tmp_path / "cmp"
    tiny = {"pggan.fmap_base": 32, "pggan.fmap_max": 8, "pggan.z_dim": 8, "pggan.schedule.minibatch_base": 8,
            "dcgan.ngf": 4, "dcgan.ndf": 4, "dcgan.z_dim": 8, "dcgan.batch_size": 8,
            "lapgan.z_dim": 8, "lapgan.coarse_g_hidden": 16, "lapgan.coarse_d_hidden": 16, "lapgan.level_g_features": 4,
            "lapgan.level_d_features": 4, "lapgan.batch_size": 8}
    tiny.update({f"{arch}.loop.minibatch_repeats": 1 for arch in compare.ARCHS})
    tiny.update({f"{arch}.loop.grid_size": 4 for arch in compare.ARCHS})
    args = ["--budget-kimg", "0.128", "--phantom-count", "64", "--metrics", "swd,msssim", "--n", "16",
            "--cpu-threads", "1", "--quiet", "--out", str(out)]
    args += [item for key, value in tiny.items() for item in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(load_app("compare_unconditional").main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = (out / "table.md").read_text()
    for arch in ("pggan", "dcgan", "lapgan"):
        assert f"| {arch} |" in table
    assert "swd_avg" in table and "msssim_real" in table
    doc = json.loads((out / "results.json").read_text())
    assert [r["arch"] for r in doc["rows"]] == ["pggan", "dcgan", "lapgan"]
    for row in doc["rows"]:
        # (swd_avg can be NaN when a barely trained generator outputs flat images: SWD normalises patches)
        assert row["kimg"] == 0.128 and row["results"]["swd_32"] > 0 and 0 < row["results"]["msssim"] <= 1
        assert row["intervals"]["msssim"][0] <= row["results"]["msssim"] <= row["intervals"]["msssim"][1]
    assert "bootstrap interval, 200 resamples" in table
    # One snapshot (at the budget) is nearest every checkpoint: one row per arch, its curve one point.
    assert [(r["arch"], r["checkpoint"]) for r in doc["checkpoints"]] == [(a, 1.0) for a in ("pggan", "dcgan", "lapgan")]
    assert Image.open(out / "curves.png").width > 0
    figure = Image.open(out / "comparison.png")
    assert figure.width > 4 * 8 * 32 and figure.height > 8 * 32  # reals + three 8x8 grids side by side
    # A re-run reuses the finished trainings (no new run directories) and the recorded evaluations.
    before = sorted(p.name for p in (out / "runs").iterdir())
    evaluated = (out / "evaluations.jsonl").read_text()
    again = CliRunner().invoke(load_app("compare_unconditional").main, args, catch_exceptions=False)
    assert again.exit_code == 0 and sorted(p.name for p in (out / "runs").iterdir()) == before
    assert (out / "evaluations.jsonl").read_text() == evaluated
    # The Inception metrics (a stand-in extractor here): the real features are extracted once and
    # shared by the three architectures through the disk cache; FID's bias is stated in the table.
    extracted = []

    def counting(source, network, device, progress=True):
        extracted.append(source.name)
        return real_extract(source, network, device, progress)

    real_extract = registry.extract_features
    monkeypatch.setattr(registry, "extract_features", counting)
    monkeypatch.setattr(registry.MetricOptions, "inception_extractor",
                        lambda self: registry.FeatureExtractor("stand-in", StandIn()))
    inception = [a if a != "swd,msssim" else "fid,kid,pr" for a in args]
    result = CliRunner().invoke(load_app("compare_unconditional").main, inception, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(extracted) == ["generated"] * 3 + ["real"]
    table = (out / "table.md").read_text()
    assert all(key in table for key in ("| fid |", "| kid |", "| precision |", "biased upwards"))
    assert compare.DEFAULT_METRICS == ("swd", "msssim", "fid", "kid", "pr")
    bad = CliRunner().invoke(load_app("compare_unconditional").main, ["--set", "dcgan.ngf"])
    assert bad.exit_code == 2 and "ARCH.OPTION=VALUE" in bad.output


def test_a_run_stopped_by_a_non_finite_loss_is_compared_with_its_snapshots_and_reused(tmp_path):
    from lesion_train import runs

    root = tmp_path / "runs"

    def diverging() -> None:
        run = runs.create_run_dir(root, "lapgan")
        runs.save_snapshot(run, 2.0, {}, {"nimg": 2000})
        raise runs.NonFiniteLossError("step 250: loss D_fake_16 is nan; stopping (the last snapshot is intact)")

    def must_not_train():
        raise AssertionError("a stopped run is reused, not trained again")

    run, stopped = compare.train_or_reuse(root, "lapgan", 10.0, diverging)
    assert stopped.startswith("step 250: loss D_fake_16 is nan") and (run / compare.STOPPED_NAME).is_file()
    assert [s.name for _, s, _ in compare.checkpoint_snapshots(run, 10.0, (0.5, 1.0))] == ["000002.000"]
    assert compare.train_or_reuse(root, "lapgan", 10.0, must_not_train) == (run, stopped)
    # Without the marker a run short of the budget is unfinished: it is trained anew.
    (run / compare.STOPPED_NAME).unlink()
    with pytest.raises(AssertionError, match="trained again"):
        compare.train_or_reuse(root, "lapgan", 10.0, must_not_train)
