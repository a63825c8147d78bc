"""Training the small U-Net lesion segmenter on real images, and mask consistency with it.

Mask consistency (as semantic-synthesis papers test layout fidelity): the segmenter, trained on
real images only, segments synthesized images; Dice/IoU against the masks that were the
generator's input say whether the generator obeyed the layout. Report the segmenter's own Dice
on real held-out images next to it: that is the ceiling.

Loss: BCE + soft Dice (a common segmentation recipe), Adam 1e-3, dihedral augmentation.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lesion_data.loader import StoreBatches
from lesion_data.phantom import generate_phantoms
from lesion_metrics.segmentation import dice_iou
from lesion_models.unet import UNetSegmenter, UNetSegmenterConfig
from tqdm import tqdm

from lesion_train import gan_loop, monitor, runs
from lesion_train.distributed import DistEnv, choose_device, peak_memory_mb
from lesion_train.setup import open_data

TICKS = 20  # log lines per run


@dataclasses.dataclass
class SegmenterTrainConfig:
    out: str = "runs/segmenter"
    data: str | None = None  # prepared store or raw folder; None = phantoms
    phantom_count: int = 1000
    resolution: int = 64
    batch_size: int = 16
    total_kimg: float = 1.0
    base: int = 16  # U-Net base width
    depth: int = 4  # U-Net down/up levels
    lr: float = 1e-3
    holdout: int = 64  # images for the segmenter's own Dice (its ceiling for mask consistency)
    holdout_data: str | None = None  # a store of real images never trained on
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def __post_init__(self):
        gan_loop.require_positive(kimg=self.total_kimg, batch=self.batch_size)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE + (1 - soft Dice), both means over the batch."""
    prob = torch.sigmoid(logits)
    inter = (prob * masks).flatten(1).sum(1)
    soft_dice = (2 * inter + 1) / (prob.flatten(1).sum(1) + masks.flatten(1).sum(1) + 1)
    return F.binary_cross_entropy_with_logits(logits, masks) + (1 - soft_dice).mean()


@torch.no_grad()
def segment(segmenter: UNetSegmenter, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Lesion probabilities (N, 1, H, W) for images in [-1, 1]."""
    segmenter.eval()
    device = next(segmenter.parameters()).device
    return torch.cat([torch.sigmoid(segmenter(images[i : i + batch_size].to(device))).cpu()
                      for i in range(0, len(images), batch_size)])


def mask_consistency(segmenter: UNetSegmenter | str | Path, images: torch.Tensor, masks: torch.Tensor) -> dict:
    """Dice/IoU of the segmenter's masks on ``images`` against ``masks`` (the generator's inputs)."""
    if not isinstance(segmenter, UNetSegmenter):
        segmenter = UNetSegmenter.from_pretrained(segmenter)
    result = dice_iou(segment(segmenter, images), masks)
    return {"dice": result["dice"], "iou": result["iou"], "count": len(images)}


def train_segmenter(config: SegmenterTrainConfig) -> dict:
    """Train, save the segmenter to ``config.out`` (config.json + model.safetensors) and write
    ``config.out/report.json`` with its Dice/IoU on held-out real images."""
    device = choose_device(config.device)
    if config.threads and device.type == "cpu":
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    store = open_data(config, DistEnv())
    if not store.has_masks:
        raise ValueError(f"{store.path}: has no masks to train a segmenter on")
    model = UNetSegmenter(UNetSegmenterConfig(base=config.base, depth=config.depth)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batches = StoreBatches(store, config.resolution, config.batch_size, seed=config.seed, with_masks=True, device=device)
    total = int(config.total_kimg * 1000)
    tick_nimg = max(config.batch_size, total // TICKS)
    start, nimg = time.time(), 0
    records, losses, tick_start, tick_start_nimg = [], [], time.time(), 0
    with tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
        while nimg < total:
            batch = next(batches)
            loss = segmentation_loss(model(batch["images"]), batch["masks"])
            runs.check_finite({"segmentation": loss.detach()}, nimg // config.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            nimg += config.batch_size
            losses.append(loss.item())
            bar.update(config.batch_size)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if nimg - tick_start_nimg >= tick_nimg or nimg >= total:
                seconds = time.time() - tick_start
                records.append({"tick": len(records) + 1, "kimg": nimg / 1000, "step": nimg // config.batch_size,
                                "batch": config.batch_size, "lr": config.lr, "loss": round(sum(losses) / len(losses), 6),
                                **monitor.timing(nimg - tick_start_nimg, seconds, peak_memory_mb(device)),
                                "world_size": 1})
                losses, tick_start, tick_start_nimg = [], time.time(), nimg
    images, masks, evaluated_on = _evaluation_set(config, store)
    report = {**mask_consistency(model, images, masks), "evaluated_on": evaluated_on,
              "seconds": round(time.time() - start, 1), "kimg": nimg / 1000, "store": str(store.path),
              "resolution": config.resolution}
    out = Path(config.out)
    model.save_pretrained(out)
    runs.atomic_write_bytes(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    # Written once the model is saved: saving replaces the whole directory.
    log = monitor.TrainingLog(out)
    for record in records:
        log.append(record)
    log.close()
    return report


def _evaluation_set(config: SegmenterTrainConfig, store) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Fresh phantoms (another seed: never trained on) for the phantom default; for a real store,
    ``holdout_data`` when given, else its first images (then the report says they were trained on)."""
    res = config.resolution
    if config.data is None:
        images, masks, _ = generate_phantoms(config.holdout, res, seed=config.seed + 10_000)
        source = "held-out phantoms"
    else:
        held = open_data(dataclasses.replace(config, data=config.holdout_data), DistEnv()) if config.holdout_data else store
        images, masks = held.images(res)[: config.holdout], held.masks(res)[: config.holdout]
        source = f"held-out store {held.path}" if config.holdout_data else "training images (no --holdout-data given)"
    images = runs.from_uint8(images)
    return images, torch.from_numpy(masks.copy()).float(), source


__all__ = ["SegmenterTrainConfig", "train_segmenter", "mask_consistency", "segment", "segmentation_loss"]
