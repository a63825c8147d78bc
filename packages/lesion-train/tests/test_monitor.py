import json
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
import torch
from lesion_data.phantom import generate_phantoms
from lesion_train import monitor, pggan, runs
from lesion_train.classifier import ClassifierTrainConfig, train_classifier
from lesion_train.segmenter import SegmenterTrainConfig, train_segmenter
from PIL import Image


class FakeWriter:
    """Records what a ``torch.utils.tensorboard.SummaryWriter`` would be asked to write."""

    instances: ClassVar[list] = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.images, self.closed = log_dir, {}, [], False
        FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, global_step, walltime):
        self.scalars.setdefault(tag, []).append((global_step, value))

    def add_image(self, tag, pixels, global_step, walltime, dataformats):
        self.images.append((tag, pixels.shape, global_step, dataformats))

    def flush(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    FakeWriter.instances = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    return FakeWriter.instances


@pytest.fixture(autouse=True)
def small(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def record(**extra):
    return {"tick": 1, "kimg": 0.5, "step": 4, "batch": 128, "sec_per_tick": 2.0, "sec_per_kimg": 4.0,
            "img_per_sec": 250.0, "peak_mem_mb": 10.0, "world_size": 1, **extra}


def test_scalars_and_grid_go_to_jsonl_and_tensorboard(tmp_path, fake_tensorboard):
    grid = tmp_path / "grid.png"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(grid)
    log = monitor.TrainingLog(tmp_path)
    log.append(record(G_loss=1.5, lr_g=0.001), grid)
    log.close()
    assert runs.JsonlLog(tmp_path / runs.LOG_NAME).read() == [record(G_loss=1.5, lr_g=0.001)]
    (writer,) = fake_tensorboard
    assert writer.log_dir == str(tmp_path) and writer.closed
    assert writer.scalars["Loss/G_loss"] == [(500, 1.5)] and writer.scalars["Timing/img_per_sec"] == [(500, 250.0)]
    assert writer.scalars["Progress/lr_g"] == [(500, 0.001)] and "Progress/kimg" not in writer.scalars
    assert writer.images == [("grid", (6, 10, 3), 500, "HWC")]
    with pytest.raises(ValueError, match="batch"):
        monitor.TrainingLog(tmp_path).append({k: v for k, v in record().items() if k != "batch"})


def test_without_tensorboard_only_the_jsonl_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    log = monitor.TrainingLog(tmp_path)
    assert log.writer is None
    log.append(record())
    assert [p.name for p in tmp_path.iterdir()] == [runs.LOG_NAME]


def _core_logged(path, writers):
    lines = [json.loads(line) for line in (path / runs.LOG_NAME).read_text().splitlines()]
    assert lines and all(set(monitor.CORE) <= set(line) for line in lines)
    (writer,) = [w for w in writers if w.log_dir == str(path)]
    assert writer.scalars["Timing/sec_per_kimg"] and writer.closed
    return writer


def test_gan_trainers_log_core_scalars_and_grids(tmp_path, fake_tensorboard):
    config = pggan.preset("cpu", resolution=8, phantom_count=16, fmap_base=16, fmap_max=8, z_dim=8, **{
        "schedule.initial_resolution": 8, "schedule.minibatch_base": 8, "schedule.tick_kimg_base": 0.016,
        "loop.total_kimg": 0.032, "loop.minibatch_repeats": 1, "loop.grid_size": 4, "loop.run_root": str(tmp_path),
        "loop.cpu_threads": 1})
    run = pggan.train_pggan(config).run_dir
    writer = _core_logged(run, fake_tensorboard)
    assert len(writer.images) == 2 and writer.scalars["Loss/G_loss"]


def test_classifier_and_segmenter_log_core_scalars(tmp_path, fake_tensorboard):
    images, _, labels = generate_phantoms(24, 32, seed=3, balanced=True)
    config = ClassifierTrainConfig(kimg=0.016, batch_size=8, eval_every_kimg=0.008, device="cpu")
    train_classifier(config, tmp_path / "classifier", images[:16], labels[:16], images[16:], labels[16:], progress=False)
    assert _core_logged(tmp_path / "classifier", fake_tensorboard).scalars["Progress/val_score"]
    train_segmenter(SegmenterTrainConfig(out=str(tmp_path / "segmenter"), phantom_count=16, resolution=16,
                                         batch_size=8, total_kimg=0.032, base=4, depth=2, holdout=4, threads=1))
    assert len(_core_logged(tmp_path / "segmenter", fake_tensorboard).scalars["Loss/loss"]) == 4
