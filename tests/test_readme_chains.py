"""The README's command chains, run end to end as a user would (subprocesses), at tiny sizes: each
command is the README's own line with its sizes made small and its placeholders (``runs/<run>``,
``samples/``, ...) pointed at the previous command's output, so an output that cannot feed the
next command, or a README line that no longer runs, fails here."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lesion_models.pix2pixhd import Pix2PixHDConfig, Pix2PixHDGenerator
from lesion_train import runs
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def readme_command(app: str, contains: str = "") -> list[str]:
    """The arguments of the first README line ``uv run apps/<app> ...`` that contains ``contains``,
    without its comment, its ``[optional]`` parts and its line continuations."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "README.md").read_text())
    for line in text.splitlines():
        found = re.match(rf"\s*uv run apps/{app}(\s.*)?$", re.sub(r"\s#\s.*", "", line))
        if found and contains in line:
            return shlex.split(re.sub(r"\[[^\]]*\]", "", found.group(1) or ""))
    raise AssertionError(f"README.md has no `uv run apps/{app}` line containing {contains!r}")


def adapt(args: list[str], paths: dict[str, Path], options: dict[str, str]) -> list[str]:
    """``args`` with README paths replaced by ``paths`` and option values by ``options`` (options the
    line lacks are appended)."""
    options = dict(options)
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in options:
            out += [arg, options.pop(arg)]
            index += 2
        else:
            out.append(str(paths.get(arg, arg)))
            index += 1
    for name, value in options.items():
        out += [name, value]
    return out


def run_app(app: str, args: list[str], cwd: Path) -> str:
    env = {**os.environ, "LESION_GAN_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "apps" / app), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"apps/{app} {shlex.join(args)}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


# 16 px from the start (SWD's smallest size), 64 images per tick.
TINY_PGGAN = {"--resolution": "16", "--initial-resolution": "16", "--preset": "cpu", "--kimg": "0.064",
              "--tick-kimg": "0.064", "--fmap-base": "32", "--fmap-max": "16", "--z-dim": "8", "--threads": "1"}


@pytest.mark.slow
def test_prepare_data_pggan_train_resume_sample_evaluate(tmp_path):
    """prepare_data --skip-bad -> pggan_train --data --conditional -> --resume -> pggan_sample --class ->
    evaluate (the samples folder, then every snapshot of the run with a report)."""
    images, store = tmp_path / "my_images", tmp_path / "store"
    rng = np.random.default_rng(0)
    for label in ("melanoma", "nevus"):
        (images / label).mkdir(parents=True)
        for i in range(16):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / label / f"{i}.png")
    (images / "nevus" / "broken.png").write_bytes(b"not a png")  # left out by --skip-bad
    run_app("prepare_data", adapt(readme_command("prepare_data", "--skip-bad"),
                                  {"my_images/": images, "stores/mine-128": store}, {"--resolution": "16"}), tmp_path)
    run_app("pggan_train", adapt(readme_command("pggan_train", "--data stores/"), {"stores/isic2017-256": store},
                                 {**TINY_PGGAN, "--out": str(tmp_path / "runs")}), tmp_path)
    (run,) = (tmp_path / "runs").iterdir()
    run_app("pggan_train", adapt(readme_command("pggan_train", "--resume"), {"runs/<run>": run},
                                 {"--kimg": "0.128", "--threads": "1"}), tmp_path)
    assert [p.name for p in runs.list_snapshots(run)] == ["000000.064", "000000.128"]
    samples = tmp_path / "samples"
    run_app("pggan_sample", adapt(readme_command("pggan_sample"), {"runs/<run>": run, "samples/": samples},
                                  {"--n": "12"}), tmp_path)
    assert (samples / "grid.png").is_file() and len(list(samples.glob("seed*.png"))) == 12
    result = tmp_path / "result.json"
    run_app("evaluate", adapt(readme_command("evaluate", "generated_pngs/"),
                              {"generated_pngs/": samples, "stores/isic2017-256": store, "result.json": result},
                              {"--metrics": "swd,msssim", "--threads": "1"}), tmp_path)
    records = json.loads(result.read_text())
    assert {r["metric"] for r in records} == {"swd", "msssim"}
    assert all(r["num_fake"] == 12 for r in records if "num_fake" in r)  # grid.png is not one of the images
    report = tmp_path / "report"
    run_app("evaluate", adapt(readme_command("evaluate", "--report"), {"runs/<run>": run, "/data/ISIC-2017": store,
                                                                       "report": report},
                              {"--n": "16", "--metrics": "swd", "--threads": "1"}), tmp_path)
    assert (report / "index.html").is_file()
    assert [r["snapshot"] for r in runs.JsonlLog(run / "metrics" / "swd.jsonl").read()] == ["000000.064", "000000.128"]


@pytest.mark.slow
def test_mask_deform_segmenter_train_mask2image_synthesize(tmp_path):
    """mask_deform (which also writes preview.png) -> mask2image_synthesize --masks, with a segmenter
    from segmenter_train."""
    lesion = np.zeros((24, 24), np.uint8)
    lesion[6:18, 4:20] = 255
    Image.fromarray(lesion).save(tmp_path / "mask.png")
    # With the feature encoder (--arch ours), whose bank of region features gives the variations.
    generator = Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_downsampling=1, n_blocks=1, feat_num=3))
    generator.feature_bank.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    generator.bank_count.fill_(generator.config.feature_bank_size)
    model = generator.save_pretrained(tmp_path / "m2i")
    new_masks, segmenter = tmp_path / "new_masks", tmp_path / "segmenter"
    run_app("mask_deform", adapt(readme_command("mask_deform"), {"mask.png": tmp_path / "mask.png",
                                                                 "new_masks": new_masks}, {"--n": "3"}), tmp_path)
    assert (new_masks / "preview.png").is_file()
    run_app("segmenter_train", adapt(readme_command("segmenter_train"), {"runs/segmenter": segmenter},
                                     {"--resolution": "32", "--phantoms": "16", "--kimg": "0.008", "--base": "2",
                                      "--depth": "2", "--holdout": "4"}), tmp_path)
    synth = tmp_path / "synth"
    run_app("mask2image_synthesize", adapt(readme_command("mask2image_synthesize"),
                                           {"runs/<run>": model, "new_masks": new_masks, "synth": synth,
                                            "runs/segmenter": segmenter},
                                           {"--variations": "2", "--resolution": "32"}), tmp_path)
    assert sorted(p.name for p in (synth / "images").iterdir()) == [
        f"mask__d{k}__melanoma__v{v}.png" for k in range(3) for v in range(2)]
    assert (synth / "mask_consistency.json").is_file()
