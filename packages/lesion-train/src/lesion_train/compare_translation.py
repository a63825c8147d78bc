"""The mask-to-image comparison behind ``uv run apps/compare_translation``: ours, pix2pixHD, pix2pix
and SPADE (``lesion_train.mask2image``) trained on the same real training split with the same
number of images shown, seed and widths, then judged on the masks of a held-out split no model
(generator, segmenter or classifier) trained on, each mask synthesized with its own diagnosis.

Splits (stratified by diagnosis, fixed by the seed): *train* (the four generators, the segmenter
and the classifier), *val* (the classifier's early stopping) and *test* (the masks synthesized
from and the real images the synthetic ones are compared with). Both splits are written once as
prepared stores under ``OUT/data/<key>/`` so the trainers read them like any other store.

Per architecture and checkpoint (the snapshot nearest each fraction of the budget, as
``compare_unconditional`` does):

- image metrics of ``lesion_metrics`` (FID, KID, SWD, MS-SSIM) between one synthetic image per
  test mask and the real test images;
- mask consistency: Dice/IoU of the segmenter's masks of the synthetic images against the input
  masks (ceiling: the segmenter on the real test images, in the notes);
- class fidelity: accuracy of the classifier on the synthetic images against their requested
  diagnosis, overall and per class (ceiling: the classifier on the real test images);
- diversity of variations: mean MS-SSIM over all pairs of ``variations`` images of one mask
  (lower = more diverse; 1 for a generator without a noise source: pix2pixHD without the feature
  encoder, SPADE without its VAE, pix2pix below 64 px, whose U-Net has no dropout level there).

Resumable as ``compare_unconditional``: finished trainings and the recorded evaluations
(``evaluations.jsonl``) are reused, as are the split stores, the segmenter and the classifier.
The shared pieces (checkpoints, cache, table, curves, figure) come from ``lesion_train.compare``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from lesion_data.store import PreparedStore, StoreError, write_store
from lesion_metrics import ImageSource, MetricOptions, calc_metric
from lesion_metrics.msssim import ms_ssim
from lesion_models import load_pretrained
from lesion_models.classifier import LesionClassifier
from lesion_models.unet import UNetSegmenter

from lesion_train import mask2image, runs, setup
from lesion_train.augment_eval import split_indices
from lesion_train.classifier import BEST_NAME, ClassifierTrainConfig, predict, train_classifier
from lesion_train.compare import (
    CHECKPOINTS,
    EvaluationCache,
    check_budget,
    checkpoint_snapshots,
    train_or_reuse,
    train_seconds,
    write_outputs,
)
from lesion_train.distributed import DistEnv, choose_device
from lesion_train.gan_loop import configure_threads
from lesion_train.segmenter import SegmenterTrainConfig, mask_consistency, train_segmenter

ARCHS = mask2image.ARCHS
DEFAULT_METRICS = ("swd", "msssim", "fid", "kid")
# Where the comparison's shared run settings go in a mask2image training config (one place to
# follow that config's layout).
_TRAIN_FIELDS = {"total_kimg": "loop.total_kimg", "tick_kimg": "tick_kimg", "snapshot_ticks": "loop.snapshot_ticks",
                 "seed": "loop.seed", "device": "loop.device", "threads": "loop.cpu_threads",
                 "run_root": "loop.run_root", "name": "loop.name"}


@dataclasses.dataclass
class TranslationCompareConfig:
    data: str | None = None  # prepared store or raw dataset folder with masks; None = built-in phantoms
    resolution: int = 32
    budget_kimg: float = 3.0  # real images shown to every architecture, in thousands
    checkpoints: tuple[float, ...] = CHECKPOINTS  # fractions of --kimg at which every metric is recorded
    seed: int = 0
    archs: tuple[str, ...] = ARCHS  # subset of ours, pix2pixhd, pix2pix, spade
    ngf: int = 16  # generator width of every architecture (SPADE's nf)
    ndf: int = 16  # discriminator width of every architecture
    n_blocks: int = 3  # residual blocks of ours and pix2pixHD
    batch_size: int = 8
    metrics: tuple[str, ...] = DEFAULT_METRICS
    test_fraction: float = 0.2  # real images per class held out: synthesized from, never trained on
    val_fraction: float = 0.1  # real images per class for the classifier's early stopping
    n: int = 64  # held-out masks synthesized from (at most this many; FID and KID need more on real data)
    variations: int = 4  # images per mask for the diversity of variations
    variation_masks: int = 16  # test masks whose variations are compared
    segmenter_kimg: float = 2.0  # training length of the mask-consistency segmenter
    classifier_kimg: float = 3.0  # training length of the class-fidelity classifier (ResNet-18)
    phantom_count: int = 600
    out: str = "runs/compare_translation"
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = auto (idle cores)
    overrides: dict = dataclasses.field(default_factory=dict)  # arch -> {option: value} on top of the shared ones
    progress: bool = True

    def __post_init__(self):
        self.archs, self.checkpoints, self.metrics = tuple(self.archs), tuple(self.checkpoints), tuple(self.metrics)
        unknown = [a for a in self.archs if a not in ARCHS]
        if unknown or not self.archs:
            raise ValueError(f"--archs must be a non-empty subset of {', '.join(ARCHS)}, got {list(self.archs)}")
        check_budget(self.budget_kimg, self.checkpoints)
        if not 0 < self.test_fraction < 1 or not 0 < self.val_fraction < 1 - self.test_fraction:
            raise ValueError("need 0 < --test-fraction, 0 < --val-fraction and their sum < 1")
        if self.n < 2 or self.variations < 1 or self.variation_masks < 1:
            raise ValueError("--n must be >= 2, --variations and --variation-masks >= 1")


def train_config(config: TranslationCompareConfig, arch: str, train_store: str) -> mask2image.Mask2ImageConfig:
    """The training config of one architecture: its published defaults, the shared data, budget,
    seed and widths, a tick (and snapshot) at the smallest checkpoint, then its overrides."""
    shared = {"data": train_store, "resolution": config.resolution, "batch_size": config.batch_size,
              "ngf": config.ngf, "ndf": config.ndf, "n_blocks": config.n_blocks}
    loop = {"total_kimg": config.budget_kimg, "tick_kimg": config.budget_kimg * min(config.checkpoints),
            "snapshot_ticks": 1, "seed": config.seed, "device": config.device, "threads": config.threads,
            "run_root": str(Path(config.out) / "runs"), "name": arch}
    shared.update({_TRAIN_FIELDS[k]: v for k, v in loop.items()})
    extra = config.overrides.get(arch, {})
    clash = sorted(set(extra) & (set(shared) | {"arch"}))
    if clash:
        raise ValueError(f"{arch}: {clash} are shared by every architecture of the comparison; use its own options")
    return setup.apply_overrides(mask2image.Mask2ImageConfig(arch=arch), {**shared, **extra})


# ---------------------------------------------------------------------------------------------
# Data: the splits, written once as stores.


@dataclasses.dataclass
class Splits:
    train: PreparedStore
    test: PreparedStore
    val_images: np.ndarray
    val_labels: np.ndarray
    class_names: list[str]


def make_splits(config: TranslationCompareConfig) -> Splits:
    store = setup.open_data(config, DistEnv())
    res = config.resolution
    if not store.has_masks:
        raise StoreError(f"{store.path}: has no masks; the mask-to-image comparison needs segmentation masks")
    labels = np.asarray(store.labels)
    if (labels < 0).any():
        raise StoreError(f"{store.path}: {(labels < 0).sum()} images have no diagnosis; label maps need one each")
    key = hashlib.sha1(json.dumps([store.manifest.get("content_hash", str(store.path)), res, config.test_fraction,
                                   config.val_fraction, config.seed]).encode()).hexdigest()[:12]
    root = Path(config.out) / "data" / key
    split = split_indices(labels, config.test_fraction, config.val_fraction, 0, config.seed)
    images, masks, ids = store.images(res), store.masks(res), store.ids
    for name in ("train", "test"):
        if not (root / name / "manifest.json").is_file():
            idx = split[name]
            write_store(root / name, np.asarray(images[idx]), np.asarray(masks[idx]), labels[idx], store.class_names,
                        source={"layout": "split", "path": str(store.path), "split": name, "seed": config.seed},
                        preprocessing={"method": f"rows of {store.path} at {res} px"},
                        ids=[ids[i] for i in idx])
    return Splits(PreparedStore(root / "train"), PreparedStore(root / "test"), np.asarray(images[split["val"]]),
                  labels[split["val"]], list(store.class_names))


# ---------------------------------------------------------------------------------------------
# Judges: the segmenter and the classifier, trained on the training split only.


def judges(config: TranslationCompareConfig, splits: Splits, device) -> tuple[UNetSegmenter, LesionClassifier, dict]:
    """(segmenter, classifier, their scores on the real test images: the ceilings)."""
    res, out = config.resolution, Path(config.out)
    seg_dir = out / "segmenter"
    if not (seg_dir / "report.json").is_file():
        train_segmenter(SegmenterTrainConfig(
            out=str(seg_dir), data=str(splits.train.path), resolution=res, total_kimg=config.segmenter_kimg,
            holdout=len(splits.test), holdout_data=str(splits.test.path), seed=config.seed, device=config.device,
            threads=config.threads or None))
    segmenter = load_pretrained(seg_dir, device)
    seg_report = json.loads((seg_dir / "report.json").read_text())
    cls_dir = out / "classifier"
    if (cls_dir / BEST_NAME / "config.json").is_file():
        classifier = load_pretrained(cls_dir / BEST_NAME, device)
    else:
        train_config = ClassifierTrainConfig(resolution=res, class_names=tuple(splits.class_names),
                                             kimg=config.classifier_kimg, eval_every_kimg=config.classifier_kimg / 4,
                                             patience=0, seed=config.seed, device=config.device)
        classifier, _ = train_classifier(train_config, cls_dir, splits.train.images(res), np.asarray(splits.train.labels),
                                         splits.val_images, splits.val_labels, progress=config.progress)
    test_labels = np.asarray(splits.test.labels)
    predicted = predict(classifier, splits.test.images(res), torch.device(device)).argmax(1)
    ceilings = {"segmenter_dice_real": seg_report["dice"], "segmenter_iou_real": seg_report["iou"],
                **_accuracy(predicted == test_labels, test_labels, splits.class_names, "classifier_accuracy_real")}
    return segmenter, classifier, ceilings


def _accuracy(hits: np.ndarray, labels: np.ndarray, class_names: list[str], prefix: str) -> dict:
    out = {prefix: float(np.mean(hits))}
    out.update({f"{prefix}_{name}": float(np.mean(hits[labels == k])) for k, name in enumerate(class_names)
                if (labels == k).any()})
    return out


# ---------------------------------------------------------------------------------------------
# One checkpoint.


def variation_msssim(variations: torch.Tensor) -> float:
    """Mean MS-SSIM over every pair of variations of each mask ((K, N, 3, R, R) in [-1, 1])."""
    pixels = runs.to_uint8(variations.flatten(0, 1)).view(variations.shape).float()
    pairs = list(itertools.combinations(range(len(variations)), 2))
    if not pairs:
        raise ValueError("the diversity of variations needs --variations >= 2")
    return float(torch.stack([ms_ssim(pixels[i], pixels[j]) for i, j in pairs]).mean())


def evaluate_checkpoint(config: TranslationCompareConfig, snapshot: Path, splits: Splits, segmenter, classifier,
                        device) -> tuple[dict, list[str], torch.Tensor]:
    """(results, notes, the first synthetic images) of the generator in ``snapshot``."""
    res = config.resolution
    G = load_pretrained(snapshot / "G", device).eval()
    count = min(config.n, len(splits.test))
    masks = torch.from_numpy(np.array(splits.test.masks(res)[:count])).unsqueeze(1).float()
    labels = torch.from_numpy(np.array(splits.test.labels[:count]))
    fakes = mask2image.generate(G, masks, labels, len(splits.class_names), 1, config.seed)[0]
    real = splits.test.images(res)[:count]
    opts = MetricOptions(ImageSource.from_array(np.asarray(real), "real", cache_key=f"{splits.test.manifest.get('content_hash')}:{res}"),
                         ImageSource.from_array(runs.to_uint8(fakes), "generated"), device=str(device), seed=config.seed,
                         progress=config.progress)
    results, notes = {}, []
    for metric in config.metrics:
        record = calc_metric(metric, opts)
        results.update(record["results"])
        notes += [f"{metric}: {record['unavailable']}"] if record.get("unavailable") else []
        notes += [n for n in record["notes"] if n not in notes]
    consistency = mask_consistency(segmenter, fakes, masks)
    results.update(mask_dice=consistency["dice"], mask_iou=consistency["iou"])
    predicted = predict(classifier, runs.to_uint8(fakes).permute(0, 2, 3, 1).numpy(), torch.device(device)).argmax(1)
    results.update(_accuracy(predicted == labels.numpy(), labels.numpy(), splits.class_names, "class_accuracy"))
    k = min(config.variation_masks, count)
    if config.variations >= 2:
        results["variation_msssim"] = variation_msssim(
            mask2image.generate(G, masks[:k], labels[:k], len(splits.class_names), config.variations, config.seed))
        if not G.stochastic:
            notes.append(f"{type(G).__name__} has no noise source at {res} px: its variations are one image")
    return results, notes, fakes[:8]


def compare_translation(config: TranslationCompareConfig) -> dict:
    """Split, train the judges, train (or reuse) every architecture, evaluate each checkpoint (or
    reuse its record); write ``table.md``, ``results.json``, ``curves.png`` and ``comparison.png``
    (mask | real | one column per architecture) into ``config.out``; return the JSON document."""
    out = runs.check_output_folder(config.out)
    out.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_bytes(out / "compare_options.json", (json.dumps(runs.to_jsonable(config), indent=2) + "\n").encode())
    device = choose_device(config.device)
    if device.type == "cpu":
        config = dataclasses.replace(config, threads=configure_threads(config.threads, DistEnv()))
    splits = make_splits(config)
    segmenter, classifier, ceilings = judges(config, splits, device)
    cache = EvaluationCache(out / "evaluations.jsonl")
    res = config.resolution
    shown = min(8, len(splits.test))
    masks = torch.from_numpy(np.array(splits.test.masks(res)[:shown])).unsqueeze(1).float()
    panels = [("mask", masks * 2 - 1), ("real", runs.from_uint8(splits.test.images(res)[:shown]))]
    rows, stopped_notes = [], []
    for arch in config.archs:
        run, stopped = train_or_reuse(out / "runs", arch, config.budget_kimg,
                                      lambda arch=arch: mask2image.train_mask2image(
                                          train_config(config, arch, str(splits.train.path))).run_dir)
        if stopped:
            stopped_notes.append(f"{arch}: training stopped before the budget ({stopped}); its rows are the "
                                 "snapshots it saved before")
        for fraction, snapshot, kimg in checkpoint_snapshots(run, config.budget_kimg, config.checkpoints):
            key = {"arch": arch, "snapshot": str(snapshot), "nimg": round(kimg * 1000), "test": str(splits.test.path),
                   **{name: getattr(config, name) for name in ("metrics", "n", "variations", "variation_masks", "seed")}}
            record = cache.get(key)
            if record is None:
                results, notes, _ = evaluate_checkpoint(config, snapshot, splits, segmenter, classifier, device)
                record = cache.put(key, {"results": results, "notes": notes})
            rows.append({"arch": arch, "checkpoint": fraction, "run": str(run), "snapshot": str(snapshot), "kimg": kimg,
                         "resolution": res, "train_seconds": round(train_seconds(run, kimg), 1),
                         "num_real": min(config.n, len(splits.test)), "num_fake": min(config.n, len(splits.test)),
                         "results": record["results"], "notes": record["notes"]})
        G = load_pretrained(snapshot / "G", device).eval()
        panels.append((arch, mask2image.generate(G, masks, torch.from_numpy(np.array(splits.test.labels[:shown])),
                                                 len(splits.class_names), 1, config.seed)[0]))
    notes = [f"{len(splits.train)} training, {len(splits.val_labels)} validation and {len(splits.test)} held-out "
             f"real images; every row synthesizes from the held-out masks, each with its own diagnosis",
             "ceilings on the real held-out images: " + ", ".join(f"{k} {v:.3g}" for k, v in ceilings.items()),
             "variation_msssim: mean MS-SSIM between the variations of one mask (lower = more diverse; 1 = no "
             "noise source)", *stopped_notes]
    document = {"config": runs.to_jsonable(config), "train_store": str(splits.train.path),
                "test_store": str(splits.test.path), "ceilings": ceilings, "checkpoints": rows}
    return write_outputs(out, document, notes, panels, ncol=1)


__all__ = ["ARCHS", "DEFAULT_METRICS", "Splits", "TranslationCompareConfig", "compare_translation",
           "evaluate_checkpoint", "judges", "make_splits", "train_config", "variation_msssim"]
