"""Training loop for lesion classifiers (the downstream task of the "does synthesis help?" study).

One run trains one ``LesionClassifier`` on an in-memory uint8 training set (real rows, possibly
mixed with synthetic ones) and selects the checkpoint with the best *validation* AUC:

- Budget in images shown (``kimg``), identical for every condition, so adding synthetic images
  changes what the network sees, not how long it trains.
- Sampling is stateless: batch ``s`` is a function of (seed, s) — epoch permutations, or with
  ``balanced_sampling`` draws with replacement weighted 1/class-count — so a resumed run sees the
  very batches the uninterrupted run would have. Under torchrun each rank takes a disjoint slice
  of the global batch. (``lesion_data.StoreBatches`` serves a whole store; here the training set is
  a split of a store mixed with synthetic rows, hence this small sampler.)
- Flips and 90-degree rotations from ``lesion_data.augment``; AdamW with a cosine learning-rate
  decay to zero over the budget; early stopping after ``patience`` evaluations without a better
  validation score.
- The run directory follows ``lesion_train.runs``: ``training_options.json``, ``log.jsonl``, an
  atomic snapshot per evaluation (older ones pruned, ``--resume`` continues from the newest), and
  ``best/`` holding the selected classifier (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lesion_data.augment import apply_dihedral, dihedral_codes
from lesion_metrics.auc import MELANOMA, SEBORRHEIC_KERATOSIS, roc_auc
from lesion_models.classifier import ClassifierConfig, LesionClassifier, load_imagenet_weights
from tqdm import tqdm

from lesion_train import distributed, monitor, runs

BEST_NAME = "best"


@dataclasses.dataclass
class ClassifierTrainConfig:
    arch: str = "resnet18"
    resolution: int = 32
    class_names: tuple[str, ...] = ("nevus", "melanoma", "seborrheic_keratosis")
    batch_size: int = 64  # global, split over ranks
    kimg: float = 20.0  # training images shown, in thousands
    lr: float = 1e-3
    weight_decay: float = 1e-4  # AdamW
    balanced_sampling: bool = False  # draw every class equally often (with replacement)
    augment: bool = True  # random flips / 90-degree rotations
    eval_every_kimg: float = 2.0  # validation AUC (and a snapshot) every this many kimg
    patience: int = 4  # evaluations without improvement before stopping; 0 = never stop early
    dropout: float | None = None  # before the classifier head; None: the backbone's default
    imagenet_weights: str | None = None  # local torchvision checkpoint; nothing is downloaded
    seed: int = 0
    device: str = "auto"
    amp: str = "off"  # off | bf16 | fp16
    eval_batch_size: int = 256  # minibatch of validation inference
    keep_snapshots: bool = False  # False: delete snapshots once the run ends (best/ stays)

    def __post_init__(self):
        if self.batch_size < 1 or self.kimg <= 0 or self.eval_every_kimg <= 0:
            raise ValueError("batch_size, kimg and eval_every_kimg must be positive")
        self.class_names = tuple(self.class_names)


def batch_indices(labels: np.ndarray, step: int, batch_size: int, seed: int, balanced: bool) -> np.ndarray:
    """Global row indices of batch ``step`` (a pure function of its arguments)."""
    n = len(labels)
    if balanced:
        counts = np.bincount(labels, minlength=labels.max() + 1)
        weights = 1.0 / counts[labels]
        rng = np.random.default_rng([seed, step, 2])
        return rng.choice(n, batch_size, p=weights / weights.sum())
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch), 1]).permutation(n)
        out[epochs == epoch] = perm[offsets[epochs == epoch]]
    return out


def validation_score(labels: np.ndarray, probabilities: np.ndarray, class_names) -> float:
    """The score early stopping maximises: the ISIC-2017 mean of melanoma- and SK-vs-rest AUC for
    the ISIC-2017 classes, else the macro one-vs-rest AUC over classes present in ``labels``."""
    if tuple(class_names[:3]) == ("nevus", "melanoma", "seborrheic_keratosis"):
        tasks = [MELANOMA, SEBORRHEIC_KERATOSIS]
    else:
        tasks = list(range(len(class_names)))
    aucs = [roc_auc(labels == k, probabilities[:, k]) for k in tasks if 0 < (labels == k).sum() < len(labels)]
    if not aucs:
        raise ValueError("validation split lacks the classes needed for an AUC")
    return float(np.mean(aucs))


@torch.no_grad()
def predict(model: LesionClassifier, images: np.ndarray, device: torch.device, batch_size: int = 256,
            amp: str = "off") -> np.ndarray:
    """Softmax probabilities (n, classes) for uint8 NHWC images."""
    model.eval()
    out = []
    for lo in range(0, len(images), batch_size):
        with distributed.autocast(device, amp):
            logits = model(runs.from_uint8(images[lo : lo + batch_size], device))
        out.append(logits.float().softmax(1).cpu())
    return torch.cat(out).numpy()


def _lr(config: ClassifierTrainConfig, step: int, total: int) -> float:
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def train_classifier(
    config: ClassifierTrainConfig,
    run_dir: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    progress: bool = True,
) -> tuple[LesionClassifier, dict]:
    """Train in ``run_dir`` (resuming from its newest snapshot if any) and return the classifier with
    the best validation score plus a summary dict. Images are uint8 NHWC at ``config.resolution``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_labels, val_labels = np.asarray(train_labels, np.int64), np.asarray(val_labels, np.int64)
    for name, images, labels in (("train", train_images, train_labels), ("val", val_images, val_labels)):
        if images.ndim != 4 or images.shape[1:] != (config.resolution, config.resolution, 3):
            raise ValueError(f"{name} images: want (n, {config.resolution}, {config.resolution}, 3), got {images.shape}")
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"{name}: {len(images)} images, {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= len(config.class_names):
            raise ValueError(f"{name}: labels outside 0..{len(config.class_names) - 1}")

    env = distributed.init_distributed(config.device)
    device = env.device
    torch.manual_seed(config.seed)
    model = LesionClassifier(ClassifierConfig(
        arch=config.arch, num_classes=len(config.class_names), resolution=config.resolution,
        dropout=config.dropout, class_names=config.class_names,
    ))
    if config.imagenet_weights:
        load_imagenet_weights(model, config.imagenet_weights)
    model.to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if env.distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = distributed.grad_scaler(device, config.amp)
    total = max(1, math.ceil(config.kimg * 1000 / config.batch_size))
    eval_steps = max(1, round(config.eval_every_kimg * 1000 / config.batch_size))
    if config.batch_size % env.world_size:
        raise ValueError(f"batch size {config.batch_size} does not divide over {env.world_size} ranks")
    local = config.batch_size // env.world_size

    log = monitor.TrainingLog(run_dir) if env.is_main else None
    step, best_score, best_step, stale = 0, -math.inf, -1, 0
    best_state = None
    snapshot = runs.latest_snapshot(run_dir)
    if snapshot is not None:
        state = runs.load_training_state(snapshot, device)
        model.load_state_dict(LesionClassifier.from_pretrained(snapshot / "classifier").state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, best_score, best_step, stale = state["step"], state["best_score"], state["best_step"], state["stale"]
        best_state = LesionClassifier.from_pretrained(snapshot / BEST_NAME).state_dict()
        runs.restore_rng_state(state["rng"])
    elif env.is_main:
        runs.write_options(run_dir, config)

    aug = torch.Generator()
    bar = tqdm(total=total, initial=step, disable=not (progress and env.is_main), desc=f"{config.arch}", leave=False)
    tick_start, losses = time.perf_counter(), []
    stopped_early = False
    while step < total and not stopped_early:
        ddp.train()
        idx = batch_indices(train_labels, step, config.batch_size, config.seed, config.balanced_sampling)
        idx = np.sort(idx[env.rank * local : (env.rank + 1) * local])
        images = runs.from_uint8(train_images[idx], device)
        labels = torch.from_numpy(train_labels[idx]).to(device)
        if config.augment:
            aug.manual_seed(config.seed * 1_000_003 + step * 8 + env.rank)
            images = apply_dihedral(images, dihedral_codes(len(idx), aug, device))
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step, total)
        with distributed.autocast(device, config.amp):
            loss = F.cross_entropy(ddp(images), labels)
        runs.check_finite({"cross_entropy": loss.detach()}, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)

        if step % eval_steps == 0 or step == total:
            # Every rank scores the whole validation set, so every rank makes the same stop decision.
            probs = predict(model, val_images, device, config.eval_batch_size, config.amp)
            score = validation_score(val_labels, probs, config.class_names)
            if score > best_score:
                best_score, best_step, stale = score, step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            stopped_early = config.patience > 0 and stale >= config.patience
            seconds = time.perf_counter() - tick_start
            kimg = step * config.batch_size / 1000
            record = {
                "tick": math.ceil(step / eval_steps), "kimg": kimg, "step": step, "batch": config.batch_size,
                "lr": _lr(config, step, total),
                "loss": distributed.mean_across_ranks({"loss": float(np.mean(losses))}, device)["loss"],
                "val_score": score, "best_val_score": best_score, "best_step": best_step,
                **monitor.timing(len(losses) * config.batch_size, seconds, distributed.peak_memory_mb(device)),
                "world_size": env.world_size,
            }
            bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{score:.3f}")
            if env.is_main:
                log.append(record)
                _save(run_dir, kimg, model, best_state, optimizer, scaler, step, best_score, best_step, stale)
            distributed.barrier()
            tick_start, losses = time.perf_counter(), []
    bar.close()
    if log is not None:
        log.close()

    model.load_state_dict(best_state)
    model.eval()
    if env.is_main:
        model.save_pretrained(run_dir / BEST_NAME)
        if not config.keep_snapshots:
            shutil.rmtree(run_dir / "snapshots", ignore_errors=True)
    summary = {"steps": step, "best_step": best_step, "best_val_score": best_score,
               "stopped_early": stopped_early, "kimg": step * config.batch_size / 1000}
    return model, summary


def _save(run_dir, kimg, model, best_state, optimizer, scaler, step, best_score, best_step, stale) -> None:
    """Atomic snapshot of the current and the best classifier, then drop older snapshots."""
    best = copy.deepcopy(model)
    best.load_state_dict(best_state)
    state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
             "best_score": best_score, "best_step": best_step, "stale": stale, "rng": runs.capture_rng_state()}
    new = runs.save_snapshot(run_dir, kimg, {"classifier": model, BEST_NAME: best}, state)
    for old in runs.list_snapshots(run_dir):
        if old != new:
            shutil.rmtree(old, ignore_errors=True)
