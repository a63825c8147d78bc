"""Run directories written by an earlier lesion-gan still resume: ``tests/fixtures/runs`` holds a
tiny PGGAN run (8 px), a tiny mask2image run (32 px, ``--arch ours``) and a tiny LAPGAN run (16 px,
from before the residual levels had their own rate), each with one snapshot
and the ``training_options.json`` shape of its time. Each is copied and resumed one tick further
through its app."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from lesion_train import runs

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs"


@pytest.fixture(autouse=True)
def phantom_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def resume(tmp_path, load_app, app: str, fixture: str, args: list[str]) -> tuple[Path, list[dict]]:
    run_dir = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, run_dir)
    before = runs.JsonlLog(run_dir / runs.LOG_NAME).read()
    result = CliRunner().invoke(load_app(app).main, ["--resume", str(run_dir), *args])
    assert result.exit_code == 0, result.output
    log = runs.JsonlLog(run_dir / runs.LOG_NAME).read()
    assert log[: len(before)] == before and len(log) == len(before) + 1, "one more tick, appended"
    assert log[-1]["step"] > before[-1]["step"] and log[-1]["kimg"] > before[-1]["kimg"]
    return run_dir, log


def test_old_pggan_run_resumes(tmp_path, load_app, one_thread):
    run_dir, log = resume(tmp_path, load_app, "pggan_train", "pggan", ["--total-kimg", "0.16"])
    assert log[-1]["resolution"] == 8 and log[-1]["kimg"] == pytest.approx(0.16)
    options = json.loads((run_dir / runs.OPTIONS_NAME).read_text())
    assert options["loop"]["total_kimg"] == 0.16 and options["resolution"] == 8


def test_old_mask2image_run_resumes(tmp_path, load_app, one_thread):
    run_dir, log = resume(tmp_path, load_app, "mask2image_train", "mask2image", ["--kimg", "0.012"])
    assert log[-1]["kimg"] == pytest.approx(0.012) and {"G_gan", "G_feat", "D_real"} <= set(log[-1])
    options = json.loads((run_dir / runs.OPTIONS_NAME).read_text())  # rewritten in today's shape
    assert options["arch"] == "ours" and options["ngf"] == 2 and options["loop"]["total_kimg"] == 0.012
    assert options["loop"]["name"] == "mask2image" and options["loop"]["cpu_threads"] == 1


def test_old_lapgan_run_resumes_with_one_rate_for_every_level(tmp_path, load_app, one_thread):
    run_dir, log = resume(tmp_path, load_app, "pggan_train", "lapgan", ["--kimg", "0.064"])
    assert log[-1]["kimg"] == pytest.approx(0.064) and {"D_loss_8", "D_loss_16"} <= set(log[-1])
    options = json.loads((run_dir / runs.OPTIONS_NAME).read_text())
    assert options["arch"] == "lapgan" and options["batch_size"] == 8
    assert options["level_lr"] == options["lr"] == 0.02  # not 0.02 * 8 / 128: the rate it trained with
    state = runs.load_training_state(runs.latest_snapshot(run_dir))
    assert [group["lr"] for group in state["recipe"]["opt_g"]["param_groups"]] == [0.02, 0.02]
