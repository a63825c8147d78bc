"""The training log every trainer writes: one JSON line per tick in ``log.jsonl`` and, when the
optional ``tensorboard`` package is installed (``lesion-train[tensorboard]``), the same scalars and
the tick's grid as TensorBoard events in the run directory, as StyleGAN3 writes its
``stats.jsonl`` and ``events.out.tfevents.*`` side by side (``tensorboard --logdir runs``).

Every record holds ``CORE`` (progress, speed and memory under the same names in every trainer)
plus the trainer's own losses, learning rates and scores. TensorBoard's step is ``kimg`` in
images shown, so runs of different batch sizes line up; scalars are grouped as StyleGAN3 does
(``Loss/``, ``Timing/``, ``Resources/``, ``Progress/``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from lesion_train.runs import LOG_NAME, JsonlLog

CORE = ("tick", "kimg", "step", "batch", "sec_per_tick", "sec_per_kimg", "img_per_sec", "peak_mem_mb", "world_size")
_GROUPS = {"sec_per_tick": "Timing", "sec_per_kimg": "Timing", "img_per_sec": "Timing", "peak_mem_mb": "Resources"}


def summary_writer(run_dir: Path):
    """A TensorBoard ``SummaryWriter`` on ``run_dir``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))


def timing(shown: int, seconds: float, peak_mem_mb: float) -> dict[str, float]:
    """The speed and memory fields of ``CORE`` for ``shown`` images in ``seconds``."""
    return {"sec_per_tick": round(seconds, 3), "sec_per_kimg": round(seconds / max(shown, 1) * 1000, 3),
            "img_per_sec": round(shown / max(seconds, 1e-9), 2), "peak_mem_mb": round(peak_mem_mb, 1)}


def _tag(name: str) -> str:
    if name in _GROUPS:
        return f"{_GROUPS[name]}/{name}"
    if "loss" in name.lower() or name.startswith(("G_", "D_")):
        return f"Loss/{name}"
    return f"Progress/{name}"


class TrainingLog:
    """``log.jsonl`` (and TensorBoard events when available) of one run directory."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.jsonl = JsonlLog(self.run_dir / LOG_NAME)
        self.writer = summary_writer(self.run_dir) if tensorboard else None

    def append(self, record: Mapping, grid: str | Path | None = None) -> None:
        """One tick: ``record`` must hold ``CORE``; ``grid`` is the tick's image grid (a PNG)."""
        missing = [key for key in CORE if key not in record]
        if missing:
            raise ValueError(f"log record lacks {missing}")
        self.jsonl.append(record)
        if self.writer is None:
            return
        step, walltime = round(record["kimg"] * 1000), time.time()
        for name, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "kimg":
                self.writer.add_scalar(_tag(name), value, global_step=step, walltime=walltime)
        if grid is not None:
            with Image.open(grid) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image("grid", pixels, global_step=step, walltime=walltime, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


__all__ = ["CORE", "TrainingLog", "summary_writer", "timing"]
