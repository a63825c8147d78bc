import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lesion_models.hub import load_pretrained
from lesion_train import runs
from lesion_train.distributed import autocast, choose_device, init_distributed
from PIL import Image


@dataclasses.dataclass
class Opts:
    name: str = "x"
    sizes: tuple[int, ...] = (4, 8)


def test_run_dir_options_and_log(tmp_path):
    first = runs.create_run_dir(tmp_path, "demo")
    second = runs.create_run_dir(tmp_path, "demo")
    assert first != second and first.name.endswith("-demo")
    runs.write_options(first, Opts())
    assert runs.read_options(first) == {"name": "x", "sizes": [4, 8]}
    log = runs.JsonlLog(first / runs.LOG_NAME)
    log.append({"kimg": 1.5, "loss": torch.tensor(2.0).item()})
    log.append({"kimg": 3.0})
    assert [r["kimg"] for r in log.read()] == [1.5, 3.0]


def test_check_finite_names_step_and_loss():
    runs.check_finite({"g": 1.0, "d": torch.tensor(0.5)}, step=3)
    with pytest.raises(runs.NonFiniteLossError, match=r"step 12: loss d is nan"):
        runs.check_finite({"g": 1.0, "d": float("nan")}, step=12)
    with pytest.raises(runs.NonFiniteLossError, match="inf"):
        runs.check_finite({"g": torch.tensor(float("inf"))}, step=0)


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(runs.capture_rng_state(), tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    runs.restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_snapshots_are_atomic_and_latest_ignores_partial_ones(tmp_path):
    from lesion_models.hub import Pretrained, register

    @dataclasses.dataclass
    class LinConfig:
        n: int = 3

    @register
    class Lin(torch.nn.Linear, Pretrained):
        config_class = LinConfig

        def __init__(self, config):
            super().__init__(config.n, config.n)
            self.config = config

    model = Lin(LinConfig())
    assert runs.latest_snapshot(tmp_path) is None
    runs.save_snapshot(tmp_path, 4, {"G": model}, {"step": 10, "rng": runs.capture_rng_state()})
    runs.save_snapshot(tmp_path, 8.7, {"G": model}, {"step": 20})
    # A snapshot being written when the process died: never listed, never resumed from.
    (tmp_path / "snapshots" / ".000012.tmp-999").mkdir()
    latest = runs.latest_snapshot(tmp_path)
    assert latest.name == "000008.700"
    assert runs.load_training_state(latest)["step"] == 20
    torch.testing.assert_close(load_pretrained(latest / "G").weight, model.weight)
    assert runs.resolve_resume(tmp_path) == (tmp_path, latest)
    assert runs.resolve_resume(tmp_path / "snapshots" / "000004.000") == (tmp_path, tmp_path / "snapshots/000004.000")


def _state_only_snapshot(path: Path) -> Path:
    path.mkdir(parents=True)
    torch.save({"nimg": 0}, path / runs.STATE_NAME)
    return path


def test_snapshot_names_are_unique_per_tick_and_sort_in_training_order(tmp_path):
    """Ticks under one kimg each get their own snapshot; an older run's integer names sort among them."""
    _state_only_snapshot(tmp_path / "snapshots" / "000001")
    for kimg in (0.064, 0.128, 0.9, 1.024, 12.48, 100):
        runs.save_snapshot(tmp_path, kimg, {}, {"kimg": kimg})
    assert [p.name for p in runs.list_snapshots(tmp_path)] == [
        "000000.064", "000000.128", "000000.900", "000001", "000001.024", "000012.480", "000100.000"]
    assert runs.latest_snapshot(tmp_path).name == "000100.000"
    assert runs.resume_candidates(tmp_path)[1][:2] == [tmp_path / "snapshots" / n for n in ("000100.000", "000012.480")]


def test_leftovers_of_killed_writers_are_cleaned_up(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    snapshots = tmp_path / "snapshots"
    runs.save_snapshot(tmp_path, 1, {}, {"nimg": 1000})
    runs.save_snapshot(tmp_path, 3, {}, {"nimg": 3000})
    # Killed while deleting the replaced copy, killed between the two renames, killed mid-write.
    _state_only_snapshot(snapshots / f".000001.000.old-{dead.pid}")
    _state_only_snapshot(snapshots / f".000002.000.old-{dead.pid}")
    (snapshots / f".000004.000.tmp-{dead.pid}" / "G").mkdir(parents=True)
    live = _state_only_snapshot(snapshots / f".000005.000.tmp-{os.getppid()}")  # a running writer's
    assert sorted(runs.clean_snapshots(tmp_path)) == [f".000001.000.old-{dead.pid}", f".000002.000.old-{dead.pid}",
                                                      f".000004.000.tmp-{dead.pid}"]
    assert sorted(p.name for p in snapshots.iterdir()) == [live.name, "000001.000", "000002.000", "000003.000"]
    assert runs.load_training_state(snapshots / "000001.000")["nimg"] == 1000


def test_truncated_state_and_missing_runs_give_one_line_errors(tmp_path):
    with pytest.raises(runs.ResumeError, match="no such run"):
        runs.resolve_resume(tmp_path / "absent")
    with pytest.raises(runs.ResumeError, match="no complete snapshot"):
        runs.resolve_resume(tmp_path)
    snap = tmp_path / "snapshots" / "000001"
    snap.mkdir(parents=True)
    torch.save({"step": 1, "blob": torch.zeros(1000)}, snap / runs.STATE_NAME)
    data = (snap / runs.STATE_NAME).read_bytes()
    (snap / runs.STATE_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(runs.ResumeError, match="training_state.pt: unreadable or truncated"):
        runs.load_training_state(snap)


def test_image_grid_layout_and_values(tmp_path):
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = runs.image_grid(images, ncol=2, pad=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3) and grid.dtype == np.uint8
    assert grid[1, 1, 0] == 0 and grid[1, 6, 0] == 128 and grid[6, 1, 0] == 255
    assert grid[0, 0, 0] == 255  # padding
    path = runs.save_image_grid(images[:, :1], tmp_path / "g" / "grid.png")
    assert Image.open(path).size == (2 * 6 + 2, 2 * 6 + 2)


def test_single_process_environment_and_autocast():
    env = init_distributed("cpu")
    assert (env.rank, env.world_size, env.is_main, env.device.type) == (0, 1, True, "cpu")
    assert choose_device("auto").type in {"cpu", "cuda"}
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp mode"):
        autocast(torch.device("cpu"), "fp8")


def test_find_model_and_class_names_resolve_one_way(tmp_path):
    run = tmp_path / "run"
    for kimg, names in ((4, ("G_ema", "G", "D")), (8, ("G", "D"))):  # a mask2image-like newest snapshot
        for name in names:
            (run / "snapshots" / runs.kimg_name(kimg) / name).mkdir(parents=True)
            (run / "snapshots" / runs.kimg_name(kimg) / name / "config.json").write_text("{}")
        (run / "snapshots" / runs.kimg_name(kimg) / runs.STATE_NAME).write_bytes(b"")
    newest = run / "snapshots" / "000008.000"
    assert runs.find_model(newest / "D") == newest / "D"  # a model directory as given
    assert runs.find_model(run) == newest / "G"  # no G_ema there: the next preferred
    assert runs.find_model(run / "snapshots" / "000004.000") == run / "snapshots" / "000004.000" / "G_ema"
    with pytest.raises(runs.ResumeError, match="with G_ema"):
        runs.find_model(run, prefer=("G_ema",))
    with pytest.raises(runs.ResumeError, match="not a model directory"):
        runs.find_model(tmp_path / "nowhere")
    assert runs.class_names(newest / "G") == ["nevus", "melanoma", "seborrheic_keratosis"]  # no options: ISIC-2017
    runs.write_options(run, {"resolved": {"class_names": ["a", "b"]}})
    assert runs.class_names(newest / "G") == ["a", "b"] and runs.run_options_of(newest / "G")["resolved"]


def test_atomic_writes_publish_whole_files_or_nothing(tmp_path):
    target = tmp_path / "sub" / "table.md"
    runs.atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with runs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and sorted(p.name for p in target.parent.iterdir()) == ["table.md"]
    assert runs.temporary_name(target).name == f".table.md.tmp-{os.getpid()}.md"
    image = runs.atomic_save_image(np.full((4, 6, 3), 200, np.uint8), tmp_path / "x.png")
    assert Image.open(image).format == "PNG" and np.asarray(Image.open(image))[0, 0, 0] == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "x.png"]
