"""Does synthesis help? Downstream classifier AUC with and without synthetic training images.

For every classifier architecture, condition and seed, a classifier is trained on the real
training split alone (ratio 0) or on it plus ``ratio x n_real`` synthetic images (drawn in the
real class proportions), or, with ``balance``, plus just enough synthetic images to give every
class as many training images as the largest one. With several synthetic sources (generators
taken at several training lengths, a mask-to-image model, ...), every source gets every synthetic
condition and all share one real-only baseline; each source's FID and KID against the real test
images sit beside its rows. Every trial is scored on the same real
held-out test split with the ISIC-2017 protocol (melanoma / SK-vs-rest AUC, their mean, balanced
accuracy). Synthetic images are only ever appended to the training split: validation (early
stopping) and test sets are real and fixed by ``split_seed`` for every condition and seed, so
conditions are compared paired by seed.

Experiment directory (``runs/<stamp>-augment_eval/``)::

    training_options.json     the resolved AugmentEvalConfig
    splits.npz                real store indices of train / val / test
    grids/real.png, grids/synthetic.png (synthetic-<source>.png with several sources)
    quality.jsonl             FID and KID of every synthetic source against the real test images
    trials/<arch>[-<source>]-<condition>-s<seed>/   one classifier run (lesion_train.classifier layout)
        result.json           test scores with 95% CIs; test_predictions.npz
    results.jsonl             one line per finished trial (resume skips these)
    table.md, table.json      mean and 95% CI over seeds; paired difference to real-only
    auc_vs_ratio.png          mean test AUC against synthetic ratio, one line per classifier and source
    delta_vs_fid.png          Δ mean AUC against each source's FID (with FID measured)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lesion_data import CLASS_NAMES
from lesion_data.prepare import open_or_prepare
from lesion_data.store import PreparedStore, StoreError, write_store
from lesion_metrics.auc import isic2017_scores, mean_ci
from lesion_models.classifier import ARCHITECTURES
from PIL import Image, ImageDraw

from lesion_train import distributed, runs
from lesion_train.classifier import ClassifierTrainConfig, predict, train_classifier
from lesion_train.sampling import for_inference

BALANCE = "balance"
REAL_ONLY = "r0"
QUALITY_SEED = 1_000_003  # distinct from every trial seed: a generator's quality images are not its training draws


@dataclasses.dataclass
class AugmentEvalConfig:
    data: str | None = None  # prepared store; None = the built-in phantom store
    phantom_n: int = 2000
    resolution: int = 32
    # One or more sources, each a prepared store, a folder with one subfolder per class, a CSV
    # (image + label or class column, e.g. mask2image_synthesize's synthesized.csv), a
    # class-conditional generator (model, snapshot or run directory), "mask2image:DIR" /
    # "mask2image-deformed:DIR" (a mask-to-image model fed the real training masks, or deformed
    # copies), or "phantom:SEED". "LABEL=SOURCE" names a source in the table.
    synthetic: tuple[str, ...] = ("phantom:1",)  # one or more of: store, class folders, CSV, generator, mask2image:DIR, phantom:SEED; LABEL=SOURCE names one (docs/augment_eval.md)
    ratios: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)  # synthetic images per real training image
    balance: bool = False  # add a condition using synthesis only to balance the classes
    classifiers: tuple[str, ...] = ("resnet18",)  # resnet18, resnet50, densenet121, efficientnet_b0
    seeds: int = 3  # training runs per classifier and condition
    test_fraction: float = 0.3  # real images held out for testing
    val_fraction: float = 0.1  # real images held out for early stopping
    real_train: int = 0  # > 0: keep only this many real training images (stratified), to study scarcity
    split_seed: int = 0  # seed of the real test/validation/training split
    test_data: str | None = None  # a separate real store to test on instead of a split
    n_boot: int = 1000  # bootstrap resamples of each interval
    quality_n: int = 500  # synthetic images per source for its FID/KID against the real test images; 0 = skip
    out: str = "runs"
    name: str = "augment_eval"
    train: ClassifierTrainConfig = dataclasses.field(default_factory=ClassifierTrainConfig)

    def __post_init__(self):
        self.ratios, self.classifiers = tuple(float(r) for r in self.ratios), tuple(self.classifiers)
        self.synthetic = (self.synthetic,) if isinstance(self.synthetic, str) else tuple(self.synthetic)
        labels = [label for label, _ in self.sources]
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"synthetic sources need distinct labels (got {labels}); name them LABEL=SOURCE")
        if self.quality_n < 0:
            raise ValueError(f"quality_n must be >= 0, got {self.quality_n}")
        if isinstance(self.train, dict):
            self.train = ClassifierTrainConfig(**self.train)
        if any(r < 0 for r in self.ratios) or (not self.ratios and not self.balance):
            raise ValueError(f"ratios must be >= 0 (got {self.ratios}), or ask for balance")
        if not 0 < self.test_fraction < 1 or not 0 < self.val_fraction < 1 - self.test_fraction:
            raise ValueError("need 0 < test_fraction, 0 < val_fraction, test_fraction + val_fraction < 1")
        unknown = [a for a in self.classifiers if a not in ARCHITECTURES]
        if unknown or not self.classifiers:
            raise ValueError(f"classifiers {unknown or '(none)'}: choose from {', '.join(ARCHITECTURES)}")
        if self.seeds < 1:
            raise ValueError("seeds must be >= 1")

    @property
    def conditions(self) -> list[str]:
        return [f"r{r:g}" for r in self.ratios] + ([BALANCE] if self.balance else [])

    @property
    def sources(self) -> list[tuple[str, str]]:
        """(label, spec) of every synthetic source, in the given order."""
        return [source_label(spec) for spec in self.synthetic]

    def trials(self) -> list[tuple[str, str | None, str, int]]:
        """(classifier, source label or None for real only, condition, seed) of every trial: the
        real-only condition is trained once and shared by every source."""
        labels = [label for label, _ in self.sources]
        return [(arch, None if condition == REAL_ONLY else label, condition, seed)
                for arch in self.classifiers for condition in self.conditions
                for label in ([None] if condition == REAL_ONLY else labels) for seed in range(self.seeds)]


def source_label(spec: str) -> tuple[str, str]:
    """``LABEL=SOURCE`` -> (LABEL, SOURCE); a bare source is labelled by its last path parts
    (a snapshot as ``run@snapshot``)."""
    head, sep, tail = spec.partition("=")
    if sep and head and not any(c in head for c in "/:\\"):
        return head, tail
    kind, colon, path = spec.partition(":") if spec.startswith(("mask2image", "phantom:")) else ("", "", spec)
    parts = Path(path).parts
    if "snapshots" in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index("snapshots")
        name = f"{parts[at - 1] if at else ''}@{parts[at + 1]}"
    else:
        name = parts[-1] if parts else path
    return f"{kind}{colon}{name}", spec


# ---------------------------------------------------------------------------------------------
# Real data and its split.


def split_indices(labels: np.ndarray, test_fraction: float, val_fraction: float, real_train: int,
                  seed: int, with_test: bool = True) -> dict[str, np.ndarray]:
    """Stratified, disjoint train / val / test indices (sorted); the same for every condition."""
    rng = np.random.default_rng([seed, 7])
    parts = {"train": [], "val": [], "test": []}
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        n_test = round(len(members) * test_fraction) if with_test else 0
        n_val = max(1, round(len(members) * val_fraction))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    split = {name: np.sort(np.concatenate(p)).astype(np.int64) for name, p in parts.items()}
    if real_train > 0 and real_train < len(split["train"]):
        train = split["train"]
        # Stratified subsample: the same fraction of every class, at least one of each.
        keep = []
        for k in np.unique(labels[train]):
            members = rng.permutation(train[labels[train] == k])
            keep.append(members[: max(1, round(len(members) * real_train / len(train)))])
        split["train"] = np.sort(np.concatenate(keep))
    return split


def open_real(config: AugmentEvalConfig) -> PreparedStore:
    return open_or_prepare(config.data, config.resolution, phantom_count=config.phantom_n)


def experiment_split(config: AugmentEvalConfig, store: PreparedStore) -> dict[str, np.ndarray]:
    """The experiment's real train / val / test indices into ``store`` (a pure function of the options)."""
    return split_indices(np.asarray(store.labels), config.test_fraction, config.val_fraction, config.real_train,
                         config.split_seed, with_test=not config.test_data)


def export_training_split(config: AugmentEvalConfig, path: str | Path) -> PreparedStore:
    """Write the real training split of ``config`` as a prepared store (images, masks, diagnoses),
    so that generators can be trained on exactly the images the classifiers train on and never on
    a validation or test image."""
    store = open_real(config)
    index = experiment_split(config, store)["train"]
    masks = store.masks(config.resolution)
    write_store(path, np.asarray(store.images(config.resolution)[index]),
                None if masks is None else np.asarray(masks[index]), np.asarray(store.labels)[index],
                store.class_names, ids=[store.ids[i] for i in index],
                source={"layout": "split", "path": str(store.path), "split": "train",
                        "split_seed": config.split_seed, "test_fraction": config.test_fraction,
                        "val_fraction": config.val_fraction, "real_train": config.real_train},
                preprocessing={"method": f"rows of {store.path} at {config.resolution} px"})
    return PreparedStore(path)


# ---------------------------------------------------------------------------------------------
# Synthetic sources: each draws ``counts[k]`` uint8 NHWC images of class k at the resolution.


def resize_uint8(images: torch.Tensor, resolution: int) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] -> uint8 (N, R, R, 3); area when shrinking, bilinear otherwise."""
    if images.shape[-1] != resolution:
        mode = "area" if images.shape[-1] > resolution else "bilinear"
        images = F.interpolate(images.float(), size=(resolution, resolution), mode=mode)
    return runs.to_uint8(images).permute(0, 2, 3, 1).numpy()


class PoolSource:
    """Draws from a fixed pool of synthetic images (store, folder or CSV), without replacement
    while the pool lasts."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, origin: str):
        self.images, self.labels, self.origin = images, np.asarray(labels, np.int64), origin

    def draw(self, counts, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, 11])
        chosen = []
        for k, count in enumerate(counts):
            if count == 0:
                continue
            pool = np.flatnonzero(self.labels == k)
            if len(pool) == 0:
                raise ValueError(f"{self.origin}: no synthetic images of class {CLASS_NAMES[k] if k < 3 else k}")
            if count > len(pool):
                warnings.warn(f"{self.origin}: {count} images of class {k} wanted, {len(pool)} available; "
                              "drawing with replacement", stacklevel=2)
            chosen.append(rng.choice(pool, count, replace=count > len(pool)))
        index = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        return np.asarray(self.images[np.sort(index)]), self.labels[np.sort(index)]


class GeneratorSource:
    """A class-conditional generator ``G(z, labels) -> [-1, 1]`` with ``z_dim``, ``num_classes``."""

    def __init__(self, generator: torch.nn.Module, resolution: int, device: torch.device, origin: str,
                 batch_size: int = 64):
        for attribute in ("z_dim", "num_classes"):
            if not hasattr(generator, attribute):
                raise ValueError(f"{origin}: generator has no attribute {attribute!r}")
        if not generator.num_classes:
            raise ValueError(f"{origin}: generator is unconditional; a class-conditional one is needed")
        self.generator, self.resolution, self.device = for_inference(generator, device), resolution, device
        self.origin, self.batch_size = origin, batch_size

    @torch.inference_mode()
    def draw(self, counts, seed: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
        gen = torch.Generator().manual_seed(seed)
        out = []
        for lo in range(0, len(labels), self.batch_size):
            y = torch.from_numpy(labels[lo : lo + self.batch_size])
            z = torch.randn(len(y), self.generator.z_dim, generator=gen)
            out.append(resize_uint8(self.generator(z.to(self.device), y.to(self.device)).cpu(), self.resolution))
        images = np.concatenate(out) if out else np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return images, labels


class PhantomSource:
    """Fresh phantoms from ``lesion_data.phantom`` with another seed: an *oracle* generator that
    samples the true data distribution (an upper bound for what a perfect GAN could add)."""

    def __init__(self, seed: int, resolution: int):
        self.seed, self.resolution, self.origin = seed, resolution, f"phantom:{seed}"

    def draw(self, counts, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from lesion_data.phantom import generate_phantoms

        k = len(counts)
        # Balanced phantoms have label index % 3, so a block of 3 * max(counts) holds enough of each class.
        n = k * max(max(counts), 1)
        images, _, labels = generate_phantoms(n, self.resolution, self.seed * 1000 + seed, balanced=True)
        index = np.concatenate([np.flatnonzero(labels == c)[:count] for c, count in enumerate(counts)])
        index = np.sort(index)
        return images[index], labels[index]


class Mask2ImageSource:
    """A mask-to-image generator (``lesion_train.mask2image``) painting lesions of the wanted class
    into masks of real *training* images of that class, or into deformed copies of them
    (``lesion_data.mask_deform``: rotation, zoom, shift, elastic warp)."""

    def __init__(self, loaded, masks: np.ndarray, labels: np.ndarray, deform: bool, resolution: int,
                 device: torch.device, origin: str, batch_size: int = 16):
        self.G, self.g_resolution, self.num_classes = loaded.G.eval().to(device), loaded.resolution, len(loaded.class_names)
        self.masks, self.labels, self.deform = masks, np.asarray(labels, np.int64), deform
        self.resolution, self.device, self.origin, self.batch_size = resolution, device, origin, batch_size

    @torch.no_grad()
    def draw(self, counts, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from lesion_data.mask_deform import deform_masks

        from lesion_train.mask2image import label_input

        rng = np.random.default_rng([seed, 13])
        picks, labels = [], []
        for k, count in enumerate(counts):
            pool = np.flatnonzero(self.labels == k)
            if count and not len(pool):
                raise ValueError(f"{self.origin}: no training mask of class {k} to synthesise from")
            picks.append(rng.choice(pool, count, replace=count > len(pool)) if count else np.zeros(0, np.int64))
            labels.append(np.full(count, k, np.int64))
        picks, labels = np.concatenate(picks), np.concatenate(labels)
        masks = self.masks[picks]
        if self.deform:
            masks = np.stack([deform_masks(m, 1, seed=seed * 100_003 + i)[0] for i, m in enumerate(masks)])
        masks = torch.from_numpy(np.array(masks)).float().unsqueeze(1)
        if masks.shape[-1] != self.g_resolution:
            masks = F.interpolate(masks, size=(self.g_resolution,) * 2, mode="nearest")
        gen = torch.Generator().manual_seed(seed)
        out = []
        for lo in range(0, len(labels), self.batch_size):
            x = label_input(masks[lo : lo + self.batch_size].to(self.device),
                            torch.from_numpy(labels[lo : lo + self.batch_size]).to(self.device), self.num_classes)
            out.append(resize_uint8(self.G(x, generator=gen).float().cpu(), self.resolution))
        images = np.concatenate(out) if out else np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return images, labels


def open_mask2image(spec: str, masks: np.ndarray | None, labels: np.ndarray, resolution: int, device) -> Mask2ImageSource:
    """``mask2image:DIR`` (real training masks) or ``mask2image-deformed:DIR``."""
    from lesion_train.mask2image import SynthesisError, load_generator

    kind, path = spec.split(":", 1)
    if masks is None:
        raise ValueError(f"{spec}: the real store has no masks to synthesise from")
    device = torch.device(device)
    try:
        loaded = load_generator(path, None, device)
    except SynthesisError:  # a bare generator directory: it works at the experiment's resolution
        loaded = load_generator(path, resolution, device)
    return Mask2ImageSource(loaded, masks, labels, kind == "mask2image-deformed", resolution, device, spec)


def _class_index(value: str, class_names) -> int:
    value = value.strip()
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    if value.lower() in class_names:
        return class_names.index(value.lower())
    raise ValueError(f"label {value!r} is neither a class index nor one of {class_names}")


def _decode(paths: list[Path], resolution: int) -> np.ndarray:
    from lesion_data.preprocess import Task, process

    return np.stack([process(Task(p, None, resolution, 0.0))[0] for p in paths]) if paths else np.zeros(
        (0, resolution, resolution, 3), np.uint8)


def open_synthetic(spec: str, resolution: int, class_names=CLASS_NAMES, device: str | torch.device = "cpu"):
    """A synthetic source from its command-line spelling (see AugmentEvalConfig.synthetic)."""
    class_names = tuple(class_names)
    if spec.startswith("phantom:"):
        return PhantomSource(int(spec.split(":", 1)[1]), resolution)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        column = "label" if rows and "label" in rows[0] else "class"
        if not rows or not {"image", column} <= set(rows[0]):
            raise ValueError(f"{path}: a synthetic CSV needs columns image and label (or class)")
        paths = [(path.parent / row["image"]) for row in rows]
        labels = [_class_index(row[column], class_names) for row in rows]
        return PoolSource(_decode(paths, resolution), np.array(labels), str(path))
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: synthetic source not found (folder, CSV, store, generator or phantom:SEED)")
    if (path / "manifest.json").is_file():
        store = open_or_prepare(path, resolution)
        return PoolSource(np.asarray(store.images(resolution)), store.labels, str(path))
    try:
        model_dir = runs.find_model(path)
    except runs.ResumeError:  # not a model: a folder of images
        model_dir = None
    if model_dir is not None:
        from lesion_models import load_pretrained

        device = torch.device(device)
        return GeneratorSource(load_pretrained(model_dir, device), resolution, device, str(model_dir))
    from lesion_data.readers import open_source

    if not open_source(path, "folder").class_names:
        raise ValueError(f"{path}: synthetic images must sit in one subfolder per class ({', '.join(class_names)})")
    store = open_or_prepare(path, resolution, layout="folder")
    names = np.array([_class_index(name, class_names) for name in store.class_names])
    return PoolSource(np.asarray(store.images(resolution)), names[store.labels], str(path))


# ---------------------------------------------------------------------------------------------
# The experiment.


def synthetic_counts(train_labels: np.ndarray, condition: str, num_classes: int) -> list[int]:
    counts = np.bincount(train_labels, minlength=num_classes)
    if condition == BALANCE:
        return [int(counts.max() - c) for c in counts]
    ratio = float(condition[1:])
    return [int(round(ratio * c)) for c in counts]


def trial_data(real_images: np.ndarray, real_labels: np.ndarray, split: dict, source, condition: str,
               seed: int, num_classes: int, test_images=None, test_labels=None) -> dict:
    """Everything one trial sees. Synthetic rows are appended to the training split only;
    ``train_origin`` holds each training row's real store index, or -1 for a synthetic row."""
    train_idx = split["train"]
    counts = synthetic_counts(real_labels[train_idx], condition, num_classes)
    if sum(counts):
        synth_images, synth_labels = source.draw(counts, seed)
    else:
        synth_images = np.zeros((0, *real_images.shape[1:]), np.uint8)
        synth_labels = np.zeros(0, np.int64)
    if test_images is None:
        test_images, test_labels = real_images[split["test"]], real_labels[split["test"]]
    return {
        "train_images": np.concatenate([real_images[train_idx], synth_images]),
        "train_labels": np.concatenate([real_labels[train_idx], synth_labels]),
        "train_origin": np.concatenate([train_idx, np.full(len(synth_labels), -1, np.int64)]),
        "val_images": real_images[split["val"]], "val_labels": real_labels[split["val"]],
        "test_images": test_images, "test_labels": test_labels,
        "n_synthetic": len(synth_labels),
    }


def run_experiment(config: AugmentEvalConfig, resume: str | None = None, progress: bool = True) -> Path | None:
    """Run (or resume) every trial, then write the table and the plot. Returns the experiment dir
    (None on the other ranks of a torchrun: every rank trains each classifier on its slice of the
    batch, rank 0 alone writes the experiment)."""
    env = distributed.init_distributed(config.train.device)
    try:
        return _run_trials(config, resume, progress, env)
    finally:
        distributed.shutdown_distributed()


def _run_trials(config: AugmentEvalConfig, resume: str | None, progress: bool, env: distributed.DistEnv) -> Path | None:
    from tqdm import tqdm

    run_dir = Path(resume) if resume else None
    if resume:
        if not (run_dir / runs.OPTIONS_NAME).is_file():
            raise runs.ResumeError(f"{run_dir}: not an augment_eval experiment (no {runs.OPTIONS_NAME})")
        config = AugmentEvalConfig(**runs.read_options(run_dir))

    # Data and every source are opened and checked before an experiment folder exists.
    store = open_real(config)
    class_names = tuple(store.class_names)
    real_images = np.asarray(store.images(config.resolution))
    real_labels = np.asarray(store.labels)
    if (real_labels < 0).any():
        raise StoreError(f"{store.path}: {(real_labels < 0).sum()} images have no label; a labelled store is needed")
    test_images = test_labels = None
    held_out_ids = set()
    if config.test_data:
        test_store = open_or_prepare(config.test_data, config.resolution)
        test_images, test_labels = np.asarray(test_store.images(config.resolution)), np.asarray(test_store.labels)
        held_out_ids |= set(test_store.ids)
    split = experiment_split(config, store)
    held_out_ids |= {store.ids[i] for i in np.concatenate([split["val"], split["test"]])}
    device = config.train.device if config.train.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    masks = store.masks(config.resolution)
    train_masks = None if masks is None else masks[split["train"]]
    sources = {}
    for label, spec in config.sources:
        check_held_out(label, spec, held_out_ids)
        if spec.startswith(("mask2image:", "mask2image-deformed:")):
            sources[label] = open_mask2image(spec, train_masks, real_labels[split["train"]], config.resolution, device)
        else:
            sources[label] = open_synthetic(spec, config.resolution, class_names, device)
    if not resume:
        run_dir = distributed.broadcast_object(runs.create_run_dir(config.out, config.name) if env.is_main else None)
        if env.is_main:
            runs.write_options(run_dir, config)
    if env.is_main:
        np.savez(run_dir / "splits.npz", **split)
    if env.is_main and config.quality_n:
        reference = test_images if test_images is not None else real_images[split["test"]]
        record_quality(run_dir, config, sources, real_labels[split["train"]], reference, device, progress)

    results_path = run_dir / "results.jsonl"
    done = {trial_key(r, config) for r in runs.JsonlLog(results_path).read()}
    trials = config.trials()
    for arch, label, condition, seed in tqdm(trials, desc="augment_eval trials", disable=not (progress and env.is_main)):
        if (arch, label, condition, seed) in done:
            continue
        data = trial_data(real_images, real_labels, split, sources.get(label), condition, seed, len(class_names),
                          test_images, test_labels)
        if arch == trials[0][0] and seed == 0 and env.is_main:
            _save_grids(run_dir, data, grid_name(label, config))
        trial_dir = run_dir / "trials" / trial_name(arch, label, condition, seed, config)
        train_config = dataclasses.replace(config.train, arch=arch, seed=seed, resolution=config.resolution,
                                           class_names=class_names)
        model, summary = train_classifier(train_config, trial_dir, data["train_images"], data["train_labels"],
                                          data["val_images"], data["val_labels"], progress=progress)
        if not env.is_main:
            continue
        probabilities = predict(model, data["test_images"], next(model.parameters()).device,
                                train_config.eval_batch_size)
        scores = isic2017_scores(data["test_labels"], probabilities, n_boot=config.n_boot, seed=seed)
        np.savez(trial_dir / "test_predictions.npz", probabilities=probabilities, labels=data["test_labels"])
        record = {"classifier": arch, "source": label, "condition": condition, "seed": seed,
                  "n_real": int((data["train_origin"] >= 0).sum()), "n_synthetic": data["n_synthetic"],
                  **summary, **scores}
        runs.atomic_write_bytes(trial_dir / "result.json", (json.dumps(runs.to_jsonable(record), indent=2) + "\n").encode())
        runs.JsonlLog(results_path).append(record)

    if not env.is_main:
        return None
    summarise(run_dir, config)
    return run_dir


def trial_key(record: dict, config: AugmentEvalConfig) -> tuple:
    """A results.jsonl record's trial; records of single-source experiments carry no source."""
    default = None if record["condition"] == REAL_ONLY else config.sources[0][0]
    return record["classifier"], record.get("source", default), record["condition"], record["seed"]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in label)


def trial_name(arch: str, label: str | None, condition: str, seed: int, config: AugmentEvalConfig) -> str:
    """A trial's folder; the source appears in it only when the experiment has several."""
    several = label is not None and len(config.sources) > 1
    return f"{arch}-{_slug(label) + '-' if several else ''}{condition}-s{seed}"


def grid_name(label: str | None, config: AugmentEvalConfig) -> str:
    return f"synthetic-{_slug(label)}.png" if label is not None and len(config.sources) > 1 else "synthetic.png"


def _save_grids(run_dir: Path, data: dict, synthetic_name: str) -> None:
    """Sample grids a person can compare by eye: real training images and synthetic ones."""
    def grid(images: np.ndarray, name: str) -> None:
        if len(images) and not (run_dir / "grids" / name).exists():
            runs.save_image_grid(runs.from_uint8(images[:64]), run_dir / "grids" / name, ncol=8)

    origin = data["train_origin"]
    grid(data["train_images"][origin >= 0], "real.png")
    grid(data["train_images"][origin < 0], synthetic_name)


# ---------------------------------------------------------------------------------------------
# Generators: never trained on a held-out image; their image quality beside their effect.


def _training_ids(path: Path) -> tuple[str | None, set[str] | None]:
    """(the data option, the ids of the real images) of the run that trained the model at
    ``path``; ids None when no run or data is recorded (phantoms, a bare model)."""
    options = runs.run_options_of(path)
    data = options.get("data")
    if data is None:
        return None, None
    # A store opens as it is; a dataset folder at the run's resolution, which its training cached.
    return data, set(open_or_prepare(data, int(options.get("resolution", 32)), progress=False).ids)


def check_held_out(label: str, spec: str, held_out_ids: set[str]) -> None:
    """Refuse a generator whose run trained on a real validation or test image of the experiment
    (a leak that would inflate every synthetic condition)."""
    kind, _, path = spec.partition(":") if spec.startswith("mask2image") else ("", "", spec)
    path = Path(path).expanduser()
    if spec.startswith("phantom:") or not path.is_dir():
        return
    try:
        data, ids = _training_ids(path)
    except (StoreError, OSError, ValueError) as error:
        warnings.warn(f"{label}: cannot check the generator's training images ({error})", stacklevel=2)
        return
    if ids is not None and ids & held_out_ids:
        raise ValueError(f"{label}: its generator trained on {len(ids & held_out_ids)} of the "
                         f"{len(held_out_ids)} real validation/test images of this experiment (data: {data}); "
                         "train it on the split that --export-train writes")


def record_quality(run_dir: Path, config: AugmentEvalConfig, sources: dict, train_labels: np.ndarray,
                   reference: np.ndarray, device, progress: bool) -> None:
    """FID and KID of ``quality_n`` images of every source (in the real training class proportions)
    against the real test images, once per source (``quality.jsonl``; reused on resume)."""
    from lesion_metrics.registry import ImageSource, MetricOptions, calc_metric

    log = runs.JsonlLog(run_dir / "quality.jsonl")
    done = {(r["source"], r["spec"]) for r in log.read()}
    counts = np.bincount(train_labels, minlength=int(train_labels.max()) + 1)
    wanted = [int(round(config.quality_n * c / counts.sum())) for c in counts]
    for label, spec in config.sources:
        if (label, spec) in done:
            continue
        images, _ = sources[label].draw(wanted, seed=QUALITY_SEED)
        opts = MetricOptions(ImageSource.from_array(np.asarray(reference), "real test"),
                             ImageSource.from_array(images, label), device=str(device), seed=0, progress=progress)
        record = {"source": label, "spec": spec, "num_real": len(reference), "num_fake": len(images)}
        for metric in ("fid", "kid"):
            result = calc_metric(metric, opts)
            record.update(result["results"])
            if result.get("unavailable"):
                record[f"{metric}_unavailable"] = result["unavailable"]
        log.append(record)


# ---------------------------------------------------------------------------------------------
# Summary: table and plot.

_METRICS = ("auc_mean", "auc_melanoma", "auc_seborrheic_keratosis", "balanced_accuracy")


def summarise(run_dir: Path, config: AugmentEvalConfig) -> list[dict]:
    records = runs.JsonlLog(Path(run_dir) / "results.jsonl").read()
    quality = {r["source"]: r for r in runs.JsonlLog(Path(run_dir) / "quality.jsonl").read()}
    rows = []
    for arch in config.classifiers:
        baseline = {r["seed"]: r["auc_mean"] for r in records if r["classifier"] == arch and r["condition"] == REAL_ONLY}
        for label, condition in dict.fromkeys((lab, c) for a, lab, c, _ in config.trials() if a == arch):
            trials = [r for r in records if trial_key(r, config)[:3] == (arch, label, condition)]
            if not trials:
                continue
            row = {"classifier": arch, "source": label, "condition": condition, "seeds": len(trials),
                   "n_real": trials[0]["n_real"], "n_synthetic": trials[0]["n_synthetic"],
                   "fid": quality.get(label, {}).get("fid"), "kid": quality.get(label, {}).get("kid")}
            for metric in _METRICS:
                # These scores live in [0, 1]; a t interval over few seeds can overshoot.
                mean, lo, hi = mean_ci([r[metric] for r in trials])
                row[metric] = (mean, max(0.0, lo), min(1.0, hi)) if not math.isnan(lo) else (mean, lo, hi)
            paired = [r["auc_mean"] - baseline[r["seed"]] for r in trials if r["seed"] in baseline]
            row["delta_auc_mean"] = mean_ci(paired) if paired and condition != REAL_ONLY else None
            rows.append(row)
    runs.atomic_write_text(Path(run_dir) / "table.json", json.dumps(runs.to_jsonable(rows), indent=2) + "\n")
    runs.atomic_write_text(Path(run_dir) / "table.md", format_table(rows, next(iter(quality.values()), None)))
    plot_auc_vs_ratio(rows, Path(run_dir) / "auc_vs_ratio.png")
    plot_delta_vs_quality(rows, Path(run_dir) / "delta_vs_fid.png")
    return rows


def _fmt(value) -> str:
    if value is None:
        return "—"
    mean, lo, hi = value
    if math.isnan(lo):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _quality(row: dict, key: str, digits: int) -> str:
    if row["source"] is None:
        return "—"
    return "n/a" if row.get(key) is None else f"{row[key]:.{digits}f}"


def format_table(rows: list[dict], quality: dict | None = None) -> str:
    head = ("| classifier | synthetic source | source FID | source KID | condition | real + synthetic "
            "| mean AUC (mel, SK) | melanoma AUC | SK AUC | balanced acc. | Δ mean AUC vs real only |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [
        f"| {r['classifier']} | {r['source'] or 'none (real only)'} | {_quality(r, 'fid', 1)} | {_quality(r, 'kid', 3)} | "
        f"{_condition_label(r['condition'])} | {r['n_real']} + {r['n_synthetic']} | "
        f"{_fmt(r['auc_mean'])} | {_fmt(r['auc_melanoma'])} | {_fmt(r['auc_seborrheic_keratosis'])} | "
        f"{_fmt(r['balanced_accuracy'])} | {_fmt(r['delta_auc_mean'])} |"
        for r in rows
    ]
    note = ("\nMean over seeds with its 95% Student-t interval; Δ is paired by seed against the real-only "
            "run (ratio 0) of the same classifier. All scores on the real held-out test split.\n")
    if quality is not None:
        note += (f"Source FID and KID: {quality['num_fake']} images of the source (real training class proportions) "
                 f"against the {quality['num_real']} real test images, lower is better; from so few images they rank "
                 "the sources of this table only.\n")
    return head + "\n".join(lines) + "\n" + note


def plot_delta_vs_quality(rows: list[dict], path: Path) -> Path | None:
    """Δ mean AUC (paired against real only) against each source's FID, one line per classifier
    and condition through the sources in FID order, each point named by its source, with the
    Δ = 0 line: where along the quality axis synthetic images stop hurting, if anywhere."""
    from lesion_train.evaluation import curve_image

    series: dict[str, list] = {}
    for r in rows:
        if r["source"] is not None and r.get("fid") is not None and r["delta_auc_mean"] is not None:
            name = f"{r['classifier']} {_condition_label(r['condition'])}"
            series.setdefault(name, []).append((r["fid"], r["delta_auc_mean"][0], r["source"]))
    if not series:
        return None
    fids = [fid for points in series.values() for fid, _, _ in points]
    points = {name: [(fid, delta) for fid, delta, _ in sorted(v)] for name, v in series.items()}
    points["no effect"] = [(min(fids), 0.0), (max(fids), 0.0)]
    labels = {name: [source for _, _, source in sorted(v)] for name, v in series.items()}
    title = "change in mean AUC vs real only (mean over seeds) against source FID"
    return runs.atomic_save_image(curve_image(title, points, labels, x_unit="FID"), path)


def _condition_label(condition: str) -> str:
    return "balance classes" if condition == BALANCE else f"ratio {condition[1:]}"


_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def plot_auc_vs_ratio(rows: list[dict], path: Path, size=(640, 420)) -> Path:
    """Mean test AUC (with the seed CI as error bars) against synthetic ratio, one line per
    classifier and synthetic source, each starting from the shared real-only point; the
    balance-only condition, if run, as a dashed horizontal line in the line's colour."""
    sources = list(dict.fromkeys(r["source"] for r in rows if r["source"] is not None)) or [None]
    classifiers = list(dict.fromkeys(r["classifier"] for r in rows))
    series = {}  # legend name -> (ratio points, balance AUC or None)
    for arch in classifiers:
        for label in sources:
            mine = [r for r in rows if r["classifier"] == arch and r["source"] in (None, label)]
            name = " ".join(part for part in (arch if len(classifiers) > 1 or len(sources) == 1 else "",
                                              label if len(sources) > 1 else "") if part)
            balance = [r["auc_mean"][0] for r in mine if r["condition"] == BALANCE]
            series[name] = (sorted((float(r["condition"][1:]), r["auc_mean"]) for r in mine if r["condition"] != BALANCE),
                            balance[0] if balance else None)
    width, height = size
    left, right, top, bottom = 70, 150, 30, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = [x for points, _ in series.values() for x, _ in points]
    if xs:
        values = [v for points, _ in series.values() for _, auc in points for v in auc if not math.isnan(v)]
        values += [b for _, b in series.values() if b is not None]
        x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y_lo, y_hi = min(values), max(values)
        pad = max(0.01, (y_hi - y_lo) * 0.1)
        y_lo, y_hi = max(0.0, y_lo - pad), min(1.0, y_hi + pad)
        sx = lambda x: left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)  # noqa: E731
        sy = lambda y: top + (y_hi - y) / (y_hi - y_lo) * (height - top - bottom)  # noqa: E731
        draw.rectangle([left, top, width - right, height - bottom], outline="black")
        for i in range(5):
            y = y_lo + (y_hi - y_lo) * i / 4
            draw.line([left - 4, sy(y), left, sy(y)], fill="black")
            draw.text((8, sy(y) - 6), f"{y:.3f}", fill="black")
        for x in sorted(set(xs)):
            draw.line([sx(x), height - bottom, sx(x), height - bottom + 4], fill="black")
            draw.text((sx(x) - 8, height - bottom + 8), f"{x:g}", fill="black")
        draw.text((left + 60, height - 20), "synthetic images per real training image", fill="black")
        draw.text((left, 8), "test AUC (mean of melanoma & SK vs rest), 95% CI over seeds", fill="black")
        for i, (name, (points, balance)) in enumerate(series.items()):
            colour = _COLOURS[i % len(_COLOURS)]
            draw.line([(sx(x), sy(v[0])) for x, v in points], fill=colour, width=2)
            for x, (mean, lo, hi) in points:
                if not math.isnan(lo):
                    draw.line([sx(x), sy(lo), sx(x), sy(hi)], fill=colour, width=1)
                    draw.line([sx(x) - 4, sy(lo), sx(x) + 4, sy(lo)], fill=colour)
                    draw.line([sx(x) - 4, sy(hi), sx(x) + 4, sy(hi)], fill=colour)
                draw.ellipse([sx(x) - 3, sy(mean) - 3, sx(x) + 3, sy(mean) + 3], fill=colour)
            if balance is not None:
                y = sy(balance)
                for x0 in range(left, width - right, 12):
                    draw.line([x0, y, min(x0 + 6, width - right), y], fill=colour, width=1)
            draw.line([width - right + 12, top + 10 + 18 * i, width - right + 32, top + 10 + 18 * i], fill=colour, width=3)
            draw.text((width - right + 38, top + 4 + 18 * i), name[:18], fill="black")
        if any(b is not None for _, b in series.values()):
            draw.text((width - right + 12, height - bottom - 14), "- - balance only", fill="black")
    return runs.atomic_save_image(image, path)
