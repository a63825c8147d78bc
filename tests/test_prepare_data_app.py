"""prepare_data end to end through a subprocess, as a user runs it."""

import json
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "apps" / "prepare_data"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _tree(root: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    (root / "benign").mkdir(parents=True)
    (root / "malignant").mkdir()
    for i, folder in enumerate(["benign", "benign", "malignant"]):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / folder / f"img{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).save(root / "malignant" / "grey.png")
    (root / "benign" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")


def test_reports_every_bad_file_then_skips_them(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _tree(src)
    failed = run(src, out, "--resolution", "16", "--workers", "2")
    assert failed.returncode != 0
    bad = [line for line in failed.stderr.splitlines() if line.startswith("bad: ")]
    assert len(bad) == 2 and any("grey.png" in b and "grey-scale" in b for b in bad)
    assert any("broken.jpg" in b for b in bad)
    assert "nothing was written" in failed.stderr and not out.exists()

    ok = run(src, out, "--resolution", "16", "--skip-bad", "--workers", "2")
    assert ok.returncode == 0, ok.stderr
    assert "3 images at 4..16 px" in ok.stdout and "2 skipped" in ok.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["benign", "malignant"]
    assert manifest["counts"] == {"benign": 2, "malignant": 1, "unknown": 0}
    assert len(manifest["skipped"]) == 2 and (out / "preview.png").is_file()
    assert np.load(out / "images_16.npy").shape == (3, 16, 16, 3)

    again = run(src, out, "--resolution", "16")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_phantom_source_and_clear_errors(tmp_path):
    ok = run("phantom", tmp_path / "ph", "--resolution", "8", "--n", "30", "--seed", "3", "--balanced")
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((tmp_path / "ph" / "manifest.json").read_text())
    assert manifest["counts"] == {"nevus": 10, "melanoma": 10, "seborrheic_keratosis": 10, "unknown": 0}
    (tmp_path / "empty").mkdir()
    empty = run(tmp_path / "empty", tmp_path / "o", "--resolution", "8")
    assert empty.returncode != 0 and "no images found" in empty.stderr and "Traceback" not in empty.stderr
    bad_res = run("phantom", tmp_path / "o", "--resolution", "48")
    assert bad_res.returncode != 0 and "power of two" in bad_res.stderr and "Traceback" not in bad_res.stderr
