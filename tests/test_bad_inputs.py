"""The bad-input corpus: every case runs an app as a user would (a subprocess) on inputs generated in a
temporary folder, and must end with rc != 0, one line naming the file or option, no traceback, and
every file that existed before the run unchanged.

Add a case by appending a ``Case`` to ``CASES``: the arguments may name corpus files as ``{name}``
(paths below the corpus folder, see ``corpus``), ``error`` is a regular expression one line of
stderr must match, and ``forbidden`` strings must not appear at all. Each subprocess pays the
import of torch (several seconds on a busy machine), so only one case per kind of problem runs by
default; the others are ``slow``.
"""

import dataclasses
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from lesion_models import load_pretrained
from lesion_models.pggan import PGGANConfig, PGGANGenerator
from lesion_models.pix2pixhd import Pix2PixHDConfig, Pix2PixHDGenerator
from lesion_train import pggan, runs
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    app: str
    args: tuple[str, ...]
    error: str  # regex for one stderr line
    forbidden: tuple[str, ...] = ()
    slow: bool = False


CASES = [
    # config.json values checked against the config's annotations (lesion_models.hub)
    Case("config-wrong-type/pggan_sample", "pggan_sample", ("{pggan_bad_type}", "--out", "{existing_out}"),
         r'pggan_bad_type/config\.json: PGGANConfig\.resolution is "sixteen", expected int$'),
    Case("config-unknown-key/pggan_sample", "pggan_sample", ("{pggan_unknown_key}", "--out", "{existing_out}"),
         r"pggan_unknown_key/config\.json: PGGANConfig: unknown config keys \['resolutoin'\]$", slow=True),
    Case("config-out-of-range/pggan_sample", "pggan_sample", ("{pggan_bad_value}", "--out", "{existing_out}"),
         r"pggan_bad_value/config\.json: PGGANConfig\.resolution must be a power of two", slow=True),
    Case("config-wrong-type/mask2image_synthesize", "mask2image_synthesize",
         ("{m2i_bad_type}", "--masks", "{masks}", "--class", "melanoma", "--out", "{existing_out}", "--resolution", "16"),
         r'm2i_bad_type/config\.json: Pix2PixHDConfig\.ngf is "4", expected int$', slow=True),
    # images above the decode limit (lesion_data.preprocess.MAX_PIXELS)
    Case("huge-image/prepare_data", "prepare_data", ("{huge_dataset}", "{prepared_out}", "--resolution", "16", "--workers", "1"),
         r"huge\.png: image is 13000x13000 \(169 Mpx\), above the 64 Mpx limit", ("DecompressionBomb",)),
    Case("beyond-pil-limit/prepare_data", "prepare_data", ("{giant_dataset}", "{prepared_out}", "--resolution", "16", "--workers", "1"),
         r"giant\.png: image too large \(400 Mpx; the limit is 64 Mpx\)", ("DecompressionBomb",), slow=True),
    Case("huge-image/turing_test", "turing_test",
         ("serve", "--real", "{huge_folder}", "--synthetic", "{images}", "--n", "2", "--db", "{new_db}", "--port", "0"),
         r"huge\.png: image is 13000x13000 \(169 Mpx\), above the 64 Mpx limit", ("DecompressionBomb",)),
    # masks for mask-to-image synthesis (lesion_data.preprocess.binary_mask)
    Case("colour-mask/mask2image_synthesize", "mask2image_synthesize",
         ("{m2i}", "--masks", "{colour_masks}", "--class", "melanoma", "--out", "{existing_out}", "--resolution", "16"),
         r"colour\.png: colour mask \(mode RGB, channels differ\)"),
    Case("photo-as-mask/mask2image_synthesize", "mask2image_synthesize",
         ("{m2i}", "--masks", "{photo_masks}", "--class", "melanoma", "--out", "{existing_out}", "--resolution", "16"),
         r"photo\.png: not a binary mask \(\d+% of pixels are neither 0 nor 255\)", slow=True),
    Case("empty-mask/mask2image_synthesize", "mask2image_synthesize",
         ("{m2i}", "--masks", "{empty_masks}", "--class", "melanoma", "--out", "{existing_out}", "--resolution", "16"),
         r"empty\.png: empty mask \(no lesion pixel\)$", slow=True),
    Case("empty-mask/mask_deform", "mask_deform", ("{empty_masks}", "--out", "{existing_out}"),
         r"empty\.png: empty mask \(no lesion pixel\)$", slow=True),
    Case("colour-mask/mask_deform", "mask_deform", ("{colour_masks}", "--out", "{existing_out}"),
         r"colour\.png: colour mask", slow=True),
    # the study database
    Case("db-below-a-file/turing_test", "turing_test",
         ("serve", "--real", "{images}", "--synthetic", "{images}", "--n", "2", "--db", "{a_file}/s.sqlite", "--port", "0"),
         r"a_file: not a folder$"),
    # output paths, checked before any work
    Case("out-is-a-file/pggan_sample", "pggan_sample", ("{pggan_ok}", "--out", "{a_file}"),
         r"a_file: exists and is not a folder \(--out .*a_file\)$"),
    Case("out-is-a-file/pggan_train", "pggan_train", ("--out", "{a_file}", "--threads", "1"),
         r"a_file: exists and is not a folder \(--out .*a_file\)$", slow=True),
    Case("out-below-a-file/pggan_train", "pggan_train", ("--out", "{a_file}/runs", "--threads", "1"),
         r"a_file: exists and is not a folder \(--out .*a_file/runs\)$", slow=True),
    Case("json-is-a-folder/evaluate", "evaluate",
         ("{images}", "{images}", "--json", "{existing_out}", "--metrics", "swd", "--threads", "1"),
         r"existing_out: is a folder; --json takes a file name$"),
    Case("report-is-a-file/evaluate", "evaluate",
         ("{images}", "{images}", "--report", "{a_file}", "--metrics", "swd", "--threads", "1"),
         r"a_file: exists and is not a folder \(--report .*a_file\)$", slow=True),
    # training lengths
    Case("kimg-zero/pggan_train", "pggan_train", ("--kimg", "0", "--out", "{new_out}"), r"--kimg must be positive, got 0$"),
    Case("kimg-negative/pggan_train", "pggan_train", ("--kimg", "-2", "--out", "{new_out}"),
         r"--kimg must be positive, got -2$", slow=True),
    Case("tick-kimg-zero/pggan_train", "pggan_train", ("--tick-kimg", "0", "--out", "{new_out}"),
         r"--tick-kimg must be positive, got 0$", slow=True),
    Case("tick-kimg-zero/mask2image_train", "mask2image_train", ("--tick-kimg", "0", "--out", "{new_out}"),
         r"--tick-kimg must be positive, got 0$", slow=True),
    Case("kimg-zero/segmenter_train", "segmenter_train", ("--kimg", "0", "--out", "{new_out}"),
         r"--kimg must be positive, got 0$", slow=True),
    # a dataset folder with bad files: named, and the way to leave them out is prepare_data's
    Case("bad-data/pggan_train", "pggan_train", ("--data", "{junk_data}", "--out", "{new_out}", "--threads", "1"),
         r"2 bad input file\(s\) in .*junk_data: .*bad0\.png: unreadable image.*bad1\.jpg: unreadable image.*"
         r"`apps/prepare_data .*junk_data STORE --resolution 32 --skip-bad`", ("pass --skip-bad",)),
    # a model directory without its config.json is not a folder of images
    Case("model-without-config/evaluate", "evaluate", ("{pggan_no_config}", "{images}", "--metrics", "swd"),
         r"pggan_no_config: a model or snapshot directory without its config\.json \(.*config\.json is missing\)$"),
    Case("config-wrong-type/evaluate", "evaluate", ("{pggan_bad_type}", "{images}", "--metrics", "swd"),
         r'pggan_bad_type/config\.json: PGGANConfig\.resolution is "sixteen", expected int$', slow=True),
    # resume when no snapshot of the run loads
    Case("resume-truncated/pggan_train", "pggan_train", ("--resume", "{run_truncated}", "--threads", "1"),
         r"run_truncated/snapshots/\d{6}\.\d{3}/D/model\.safetensors: unreadable or truncated", slow=True),
    # every architecture's configuration is checked before any trains
    Case("arch-config/compare_unconditional", "compare_unconditional", ("--resolution", "16", "--out", "{new_out}"),
         r"dcgan: DCGANConfig\.resolution must be a power of two in 32\.\.256, got 16$", slow=True),
    # weight files that would run code when unpickled: refused without PyTorch's weights_only advice
    Case("malicious-inception-weights/evaluate", "evaluate",
         ("{images}", "{images}", "--inception-weights", "{evil_pt}", "--metrics", "fid", "--resolution", "16",
          "--threads", "1"),
         r"evil\.pt: not a readable weight file \(holds Python objects other than tensors \(\S+\); refused"),
    Case("malicious-vgg-weights/mask2image_train", "mask2image_train",
         ("--vgg-weights", "{evil_pt}", "--out", "{new_out}", "--phantoms", "8", "--resolution", "32", "--kimg", "0.008"),
         r"evil\.pt: unreadable VGG19 weights \(holds Python objects other than tensors", slow=True),
]


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height RGB pixels but holds almost none: what a reader sees
    before decoding, without allocating the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    payload = json.loads(path.read_text())
    payload["config"].update(changes)
    path.write_text(json.dumps(payload))


def tiny_pggan(run_root: Path, **overrides):
    """An 8 px PGGAN on 64 phantoms: one 0.016 kimg tick per snapshot."""
    return pggan.preset("cpu", **{
        "resolution": 8, "phantom_count": 64, "fmap_base": 32, "fmap_max": 8, "z_dim": 8,
        "schedule.initial_resolution": 8, "schedule.minibatch_base": 8, "schedule.tick_kimg_base": 0.016,
        "loop.total_kimg": 0.016, "loop.minibatch_repeats": 2, "loop.snapshot_ticks": 1, "loop.grid_size": 4,
        "loop.run_root": str(run_root), "loop.cpu_threads": 1, **overrides})


def _truncated_run(path: Path) -> None:
    """A run whose only snapshot has a truncated D."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LESION_GAN_CACHE", str(path.parent / "cache"))
        run = pggan.train_pggan(tiny_pggan(path.parent / "tmp_runs")).run_dir
    run.rename(path)
    (path.parent / "tmp_runs").rmdir()
    weights = runs.latest_snapshot(path) / "D" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    generator = PGGANGenerator(PGGANConfig(resolution=8, fmap_base=16, fmap_max=8, z_dim=8))
    for name, changes in (("pggan_bad_type", {"resolution": "sixteen"}), ("pggan_unknown_key", {"resolutoin": 8}),
                          ("pggan_bad_value", {"resolution": 12})):
        generator.save_pretrained(root / name)
        _edit_config(root / name, **changes)
    generator.save_pretrained(root / "pggan_ok")
    generator.save_pretrained(root / "pggan_no_config")
    (root / "pggan_no_config" / "config.json").unlink()
    torch.save({"weights": _RunsCode()}, root / "evil.pt")
    (root / "junk_data").mkdir()
    (root / "junk_data" / "bad0.png").write_bytes(b"not a png")
    (root / "junk_data" / "bad1.jpg").write_bytes(b"not a jpeg")
    _truncated_run(root / "run_truncated")
    m2i = Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_downsampling=1, n_blocks=1))
    m2i.save_pretrained(root / "m2i")
    m2i.save_pretrained(root / "m2i_bad_type")
    _edit_config(root / "m2i_bad_type", ngf="4")
    images = root / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    (root / "huge_folder").mkdir()
    _png_header(root / "huge_folder" / "huge.png", 13000, 13000)
    (root / "huge_dataset").mkdir()
    _png_header(root / "huge_dataset" / "huge.png", 13000, 13000)
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "huge_dataset" / "fine.png")
    (root / "giant_dataset").mkdir()
    _png_header(root / "giant_dataset" / "giant.png", 20000, 20000)
    lesion = np.zeros((24, 24), np.uint8)
    lesion[6:18, 4:20] = 255
    for folder, name, pixels in (
        ("masks", "good.png", lesion),
        ("colour_masks", "colour.png", np.stack([lesion, lesion // 2, np.zeros_like(lesion)], 2)),
        ("photo_masks", "photo.png", rng.integers(0, 256, (24, 24), dtype=np.uint8)),
        ("empty_masks", "empty.png", np.zeros_like(lesion)),
    ):
        (root / folder).mkdir()
        Image.fromarray(lesion).save(root / folder / "good.png")
        Image.fromarray(pixels).save(root / folder / name)
    # An output folder that already holds results: a failing run must leave them as they are.
    (root / "existing_out").mkdir()
    Image.fromarray(lesion).save(root / "existing_out" / "earlier.png")
    (root / "a_file").write_text("a file where a folder is expected\n")
    return root


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def run_case(case: Case, root: Path) -> subprocess.CompletedProcess:
    args = [arg.format(**{p.name.replace(".", "_"): p for p in root.iterdir()}, new_db=root / "new" / "s.sqlite",
                       new_out=root / "new" / "out", prepared_out=root / "prepared") for arg in case.args]
    env = {**os.environ, "LESION_GAN_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "apps" / case.app), *args], capture_output=True, text=True,
                          env=env, cwd=root, timeout=300)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, corpus):
    before = _tree(corpus)
    proc = run_case(case, corpus)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if re.search(case.error, line)]
    assert lines, f"no stderr line matches {case.error!r}:\n{proc.stderr}"
    for text in case.forbidden + ("weights_only",):
        assert text not in proc.stderr, proc.stderr
    after = _tree(corpus)
    assert {k: v for k, v in after.items() if k in before} == before, "files written before the run changed"
    assert not (corpus / "new").exists() and not (corpus / "prepared").exists()
    assert not [k for k in after if ".tmp-" in k], "temporary files left behind"


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_malicious_training_state_is_refused_without_advice(tmp_path):
    snapshot = tmp_path / "snapshots" / "000000"
    snapshot.mkdir(parents=True)
    torch.save({"nimg": 0, "recipe": _RunsCode()}, snapshot / runs.STATE_NAME)
    with pytest.raises(runs.ResumeError) as info:
        runs.load_training_state(snapshot)
    message = str(info.value)
    assert message.startswith(f"{snapshot / runs.STATE_NAME}: holds Python objects other than tensors")
    assert "weights_only" not in message and "\n" not in message


def test_contact_sheets_in_an_output_folder_are_not_read_as_images(corpus, tmp_path):
    """pggan_sample's grid.png and mask_deform's preview.png beside the images they show: the
    Turing test, evaluate's folder reader and mask synthesis list the images only."""
    from lesion_data.preprocess import read_mask_folder
    from lesion_data.readers import open_source
    from lesion_turing.images import list_images

    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("seed0000_000000.png", "seed0000_000001.png", "grid.png", "interpolation.png"):
        (samples / name).write_bytes((corpus / "images" / "img0.png").read_bytes())
    assert [p.name for p in list_images(samples)] == ["seed0000_000000.png", "seed0000_000001.png"]
    assert sorted(r.image.name for r in open_source(samples).records) == ["seed0000_000000.png", "seed0000_000001.png"]
    masks = tmp_path / "new_masks"
    masks.mkdir()
    for name in ("a__d0.png", "preview.png"):
        (masks / name).write_bytes((corpus / "masks" / "good.png").read_bytes())
    assert read_mask_folder(masks, 8)[0] == ["a__d0"]


def test_resume_skips_an_unreadable_newest_snapshot_and_says_so(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LESION_GAN_CACHE", str(corpus / "cache"))  # its phantoms are prepared already
    run = pggan.train_pggan(tiny_pggan(tmp_path / "runs", **{"loop.total_kimg": 0.048})).run_dir
    names = [p.name for p in runs.list_snapshots(run)]
    assert names == ["000000.016", "000000.032", "000000.048"]
    for name in names[1:]:
        weights = run / "snapshots" / name / "D" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    result = pggan.train_pggan(pggan.apply_overrides(pggan.load_run_config(run), {"loop.resume": str(run)}))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("resume:")]
    assert [line.split(":")[1].strip() for line in lines] == [
        "skipping snapshot 000000.048", "skipping snapshot 000000.032", "from snapshot 000000.016"]
    assert all("D/model.safetensors: unreadable or truncated" in line for line in lines[:2])
    # Training went on from 0.016 kimg and wrote the two snapshots again, readable this time.
    assert result.kimg == 0.048 and [p.name for p in runs.list_snapshots(run)] == names
    for name in names:
        load_pretrained(run / "snapshots" / name / "D")


KILLED_WRITER = """
import json, os, shutil, sys, time
from pathlib import Path
import torch
from lesion_train import pggan

options, marker, stage = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3]


def hang():
    marker.write_text(stage)
    time.sleep(600)


if stage == "write":  # the third snapshot's training state: half written, then the process is killed
    save, calls = torch.save, []

    def slow_save(obj, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            handle.write(b"partial")
            handle.flush()
            hang()
        return save(obj, handle, *args, **kwargs)

    torch.save = slow_save
else:  # "delete": killed while replace_directory deletes the snapshot a new one replaced
    rmtree = shutil.rmtree

    def slow_rmtree(path, *args, **kwargs):
        if ".old-" in Path(path).name:
            rmtree(Path(path) / "D")
            hang()
        return rmtree(path, *args, **kwargs)

    shutil.rmtree = slow_rmtree
pggan.train_pggan(pggan.PGGANTrainConfig(**options))
"""


def _run_until_hung(options: dict, stage: str, tmp_path: Path) -> None:
    """Run KILLED_WRITER until it hangs at ``stage``, then SIGKILL it."""
    (tmp_path / "options.json").write_text(json.dumps(options))
    marker = tmp_path / f"{stage}.marker"
    env = {**os.environ, "LESION_GAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "options.json"), str(marker), stage],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(1200):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no hang within 120 s"
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


@pytest.mark.slow
def test_sigkill_while_writing_a_snapshot_leaves_nothing_after_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path / "cache"))
    config = tiny_pggan(tmp_path / "runs", **{"loop.total_kimg": 0.064})
    _run_until_hung(runs.to_jsonable(config), "write", tmp_path)
    (run,) = (tmp_path / "runs").iterdir()
    snapshots = run / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir())[0].startswith(".000000.048.tmp-")
    # A second run resumes from an older snapshot, so its next snapshot replaces one: killed mid-delete.
    resumed = runs.to_jsonable(pggan.apply_overrides(config, {"loop.resume": str(snapshots / "000000.016")}))
    _run_until_hung(resumed, "delete", tmp_path)
    assert any(".000000.032.old-" in p.name for p in snapshots.iterdir())
    result = pggan.train_pggan(pggan.apply_overrides(config, {"loop.resume": str(run)}))
    assert result.kimg == 0.064
    assert sorted(p.name for p in snapshots.iterdir()) == ["000000.016", "000000.032", "000000.048", "000000.064"]
    for snapshot in runs.list_snapshots(run):
        assert runs.load_training_state(snapshot)["nimg"] == round(float(snapshot.name) * 1000)
        for name in ("G_ema", "G", "D"):
            load_pretrained(snapshot / name)
