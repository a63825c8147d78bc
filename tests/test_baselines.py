"""apps/pggan_train --arch dcgan: train, resume with the run's arch, sample."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lesion_train import runs


@pytest.fixture(autouse=True)
def phantom_cache(tmp_path_factory, monkeypatch, one_thread):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_app_arch_dcgan_then_resume_and_sample(tmp_path, load_app):
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
