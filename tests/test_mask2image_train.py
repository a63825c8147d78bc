"""apps/mask2image_train and apps/mask_deform in-process (the subprocess path is in
test_mask2image_synthesize)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from lesion_train import runs
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def phantom_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_train_app_smoke(tmp_path, monkeypatch):
    # In-process (the synthesize app test covers the subprocess path); a second interpreter would
    # pay torch's import again.
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path / "cache"))
    args = ["--arch", "spade", "--resolution", "32", "--phantoms", "16", "--batch", "2", "--kimg", "0.004",
            "--tick-kimg", "0.002", "--ngf", "2", "--ndf", "4", "--threads", "1", "--run-root", str(tmp_path / "runs")]
    result = CliRunner().invoke(load_app("mask2image_train").main, args)
    assert result.exit_code == 0, result.output
    assert "grid (label map | real | synthesized)" in result.output
    assert "VGG19 perceptual loss is off" in result.output
    run_dir = Path(result.output.split("run: ")[1].splitlines()[0])
    assert runs.read_options(run_dir)["resolved"]["gan_mode"] == "hinge"
    more = CliRunner().invoke(load_app("mask2image_train").main, ["--resume", str(run_dir), "--kimg", "0.006"])
    assert more.exit_code == 0, more.output
    assert [r["kimg"] for r in runs.JsonlLog(run_dir / runs.LOG_NAME).read()] == [0.002, 0.004, 0.006]


def load_app(name):
    spec = importlib.util.spec_from_file_location(f"app_{name}", ROOT / "apps" / name / "__main__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_app_errors_are_one_line(tmp_path):
    app = load_app("mask2image_train")
    result = CliRunner().invoke(app.main, ["--resume", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "nowhere: no such run or snapshot directory" in result.output
    result = CliRunner().invoke(app.main, ["--resolution", "48", "--run-root", str(tmp_path)])
    assert result.exit_code == 1 and "resolution 48 must be a power of two" in result.output


def test_mask_deform_app_writes_variants_and_preview(tmp_path):
    yy, xx = np.mgrid[:48, :64]
    Image.fromarray((((yy - 24) ** 2 + (xx - 32) ** 2 < 150) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    result = CliRunner().invoke(load_app("mask_deform").main, [str(tmp_path / "m.png"), "--n", "3", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["m__d0.png", "m__d1.png", "m__d2.png", "preview.png"]
    variant = np.asarray(Image.open(tmp_path / "o" / "m__d1.png"))
    assert variant.shape == (48, 64) and set(np.unique(variant)) == {0, 255}
    (tmp_path / "bad.png").write_bytes(b"nope")
    result = CliRunner().invoke(load_app("mask_deform").main, [str(tmp_path / "bad.png"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "bad.png: unreadable mask" in result.output
