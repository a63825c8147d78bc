"""The unconditional comparison behind ``uv run apps/compare_unconditional``: PGGAN, DCGAN and LAPGAN
trained on the same data with the same number of real images shown and the same seed, each final
``G_ema`` evaluated by ``lesion_train.evaluation`` against the same real images, then one table
(Markdown + JSON) and one figure (reals and a sample grid per architecture, side by side).

Fairness: every architecture gets ``budget_kimg`` thousand real images. PGGAN's progressive schedule
is compressed when it would not reach the target resolution within the budget (equal stabilise and
fade phases, the last stabilisation two thirds of a phase, the proportions of the ``cpu`` preset),
so every model is judged at full resolution. A re-run with the same output folder reuses finished
trainings (a run that reached the budget) and evaluates again.

Cost: the Inception metrics (FID, KID, precision/recall) dominate the evaluation on a CPU (about
6 img/s at 299 px on two idle cores). The real side's features are extracted once and cached on
disk per (data, resolution, count), so the three architectures share them, and each model's
generated features serve FID, KID and precision/recall alike: ``4 n`` Inception passes in all.
The default ``n = 1000`` keeps the 32 px phantom comparison within 30 minutes on two cores; FID
from 1000 images is biased upwards (and its covariance rank-deficient), so it only ranks the rows
of one table; KID is unbiased at any n.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from lesion_train import baselines, gan_loop, pggan, runs, setup
from lesion_train.distributed import DistEnv, choose_device
from lesion_train.evaluation import EvaluateConfig, evaluate, format_value, load_latent_generator

ARCHS = ("pggan", *baselines.ARCHS)
DEFAULT_METRICS = ("swd", "msssim", "fid", "kid", "pr")


@dataclasses.dataclass
class CompareConfig:
    data: str | None = None  # prepared store or raw dataset folder; None = built-in phantoms
    resolution: int = 32
    budget_kimg: float = 14.0  # real images shown to every architecture, in thousands
    seed: int = 0
    preset: str = "cpu"  # cpu | gpu, for all three
    archs: tuple[str, ...] = ARCHS  # subset of pggan, dcgan, lapgan
    metrics: tuple[str, ...] = DEFAULT_METRICS
    n: int = 1000  # generated images per model for the metrics (and at most this many real ones)
    phantom_count: int = 2000
    out: str = "runs/compare"
    device: str = "auto"
    cpu_threads: int = 0  # torch CPU threads; 0 = auto (idle cores)
    overrides: dict = dataclasses.field(default_factory=dict)  # arch -> {option: value} on top of the preset
    progress: bool = True

    def __post_init__(self):
        unknown = [a for a in self.archs if a not in ARCHS]
        if unknown or not self.archs:
            raise ValueError(f"archs must be a non-empty subset of {ARCHS}, got {list(self.archs)}")
        if self.budget_kimg <= 0:
            raise ValueError(f"budget_kimg must be positive, got {self.budget_kimg}")


def train_config(config: CompareConfig, arch: str):
    """The training config of one architecture: its preset, the shared data/budget/seed, overrides."""
    shared = {
        "data": config.data, "resolution": config.resolution, "phantom_count": config.phantom_count,
        "loop.total_kimg": config.budget_kimg, "loop.seed": config.seed, "loop.run_root": str(Path(config.out) / "runs"),
        "loop.name": arch, "loop.device": config.device, "loop.cpu_threads": config.cpu_threads,
    }
    extra = config.overrides.get(arch, {})
    clash = sorted(set(extra) & set(shared))
    if clash:
        raise ValueError(f"{arch}: {clash} are shared by every architecture of the comparison; use its own options")
    if arch != "pggan":
        return baselines.preset(arch, config.preset, **shared, **extra)
    train = pggan.preset(config.preset, **shared, **extra)
    s = train.schedule
    grow = int(math.log2(config.resolution) - math.log2(s.initial_resolution))
    if (s.stabilize_kimg + s.transition_kimg) * grow > config.budget_kimg:
        phase = config.budget_kimg / (2 * grow + 2 / 3)
        train = setup.apply_overrides(train, {"schedule.stabilize_kimg": phase, "schedule.transition_kimg": phase})
    return train


def train_configs(config: CompareConfig) -> dict:
    """Every architecture's training config, each with its networks' config built, so that an
    option one of them cannot take fails before any of them trains."""
    configs = {}
    for arch in config.archs:
        try:
            train = configs[arch] = train_config(config, arch)
            train.network_config(0) if arch == "pggan" else train.network_config()
        except ValueError as error:
            raise ValueError(f"{arch}: {error}") from None
    return configs


def _finished_run(config: CompareConfig, arch: str) -> Path | None:
    """A run of ``arch`` in this comparison folder that already reached the budget."""
    for run in sorted((Path(config.out) / "runs").glob(f"*-{arch}"), reverse=True):
        snapshot = runs.latest_snapshot(run)
        if snapshot is not None and runs.load_training_state(snapshot)["nimg"] >= config.budget_kimg * 1000:
            return run
    return None


def _train(config: CompareConfig, arch: str) -> tuple[Path, float]:
    """(run directory, training wall seconds); the seconds of a reused run come from its log."""
    run = _finished_run(config, arch)
    if run is None:
        train = train_config(config, arch)
        result = pggan.train_pggan(train) if arch == "pggan" else baselines.train_baseline(train)
        run = result.run_dir
    seconds = sum(r["sec_per_tick"] for r in runs.JsonlLog(run / runs.LOG_NAME).read())
    return run, seconds


def _labelled(grid: np.ndarray, label: str) -> Image.Image:
    image = Image.new("RGB", (grid.shape[1], grid.shape[0] + 16), "white")
    image.paste(Image.fromarray(grid), (0, 16))
    ImageDraw.Draw(image).text((4, 2), label, fill="black")
    return image


def write_figure(path: Path, panels: list[tuple[str, torch.Tensor]]) -> Path:
    """Panels (label, images in [-1, 1]) side by side, 8 columns each, one labelled grid per panel."""
    images = [_labelled(runs.image_grid(x, ncol=8), label) for label, x in panels]
    gap = 8
    figure = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)), "white")
    left = 0
    for image in images:
        figure.paste(image, (left, 0))
        left += image.width + gap
    return runs.atomic_save_image(figure, path)


def _columns(rows: list[dict]) -> list[str]:
    """Result keys in first-seen order; per-level real-vs-real SWD baselines are left to the JSON."""
    columns: list[str] = []
    for row in rows:
        for key in row["results"]:
            if key not in columns and not (key.startswith("swd_real_baseline_") and key != "swd_real_baseline_avg"):
                columns.append(key)
    return columns


def _inception_note(rows: list[dict]) -> list[str]:
    """What FID/KID from this many images can and cannot be compared with."""
    counts = {(row["num_real"], row["num_fake"]) for row in rows if {"fid", "kid"} & set(row["results"])}
    if not counts:
        return []
    real, fake = min(counts)
    note = (f"FID/KID/precision/recall from {fake} generated and {real} real images per row: FID at this size "
            f"is biased upwards, so it ranks the rows of this table only and is not comparable with published "
            f"FIDs (usually 50k images); KID is unbiased")
    if min(real, fake) <= 1000:
        note += " (its 100 subsets of up to 1000 images are then the whole sets, so kid_std is 0)"
    return [note]


def format_markdown(rows: list[dict]) -> str:
    columns = _columns(rows)
    lines = ["| arch | kimg | train min | " + " | ".join(columns) + " |",
             "|" + "---|" * (len(columns) + 3)]
    for row in rows:
        values = [format_value(row, c) if c in row["results"] else "n/a" for c in columns]
        lines.append(f"| {row['arch']} | {row['kimg']:g} | {row['train_seconds'] / 60:.1f} | " + " | ".join(values) + " |")
    notes = _inception_note(rows) + sorted({note for row in rows for note in row["notes"]})
    notes += sorted({f"* {row['arch']} {key}: {why}" for row in rows for key, why in row.get("flags", {}).items()})
    notes += sorted({f"[lo, hi]: 95% bootstrap interval, {row['bootstrap']} resamples of both sides"
                     for row in rows if row.get("intervals")})
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def compare(config: CompareConfig) -> dict:
    """Train (or reuse) and evaluate every architecture; write ``table.md``, ``results.json`` and
    ``comparison.png`` into ``config.out``; return the JSON document."""
    train_configs(config)
    out = runs.check_output_folder(config.out)
    out.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_bytes(out / "compare_options.json", (json.dumps(runs.to_jsonable(config), indent=2) + "\n").encode())
    device = choose_device(config.device)
    store = setup.open_data(train_config(config, config.archs[0]), DistEnv())
    real = runs.from_uint8(store.images(config.resolution)[:64])
    panels: list[tuple[str, torch.Tensor]] = [("real", real)]
    rows = []
    for arch in config.archs:
        started = time.time()
        run, train_seconds = _train(config, arch)
        snapshot = runs.latest_snapshot(run)
        G = load_latent_generator(snapshot / "G_ema", device)
        if int(G.resolution) != config.resolution:
            raise ValueError(f"{arch}: {run} ended at {G.resolution} px, not {config.resolution} px; raise --kimg")
        records = evaluate(EvaluateConfig(generated=str(snapshot / "G_ema"), real=str(store.path), metrics=config.metrics,
                                          n=config.n, seed=config.seed, device=config.device, progress=config.progress,
                                          threads=config.cpu_threads))
        results, notes, intervals, flags = {}, [], {}, {}
        counts = {"num_real": records[0]["num_real"], "num_fake": records[0]["num_fake"]} if records else {}
        for record in records:
            results.update(record["results"])
            intervals.update(record.get("intervals", {}))
            flags.update(record.get("flags", {}))
            notes += [n for n in record.get("notes", []) if n not in notes]
        z, _ = gan_loop.fixed_latents(G, 64, config.seed, device)
        panels.append((arch, gan_loop.generate_grid(G, z, None).cpu()))
        rows.append({"arch": arch, "run": str(run), "snapshot": str(snapshot), "kimg": runs.load_training_state(snapshot)["nimg"] / 1000,
                     "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.time() - started, 1),
                     **counts, "results": results, "notes": notes, "intervals": intervals, "flags": flags,
                     "bootstrap": max((r.get("bootstrap", 0) for r in records), default=0)})
    document = {"config": runs.to_jsonable(config), "store": str(store.path), "rows": rows}
    runs.atomic_write_bytes(out / "results.json", (json.dumps(document, indent=2) + "\n").encode())
    runs.atomic_write_text(out / "table.md", format_markdown(rows))
    document["figure"] = str(write_figure(out / "comparison.png", panels))
    document["table"] = str(out / "table.md")
    return document


__all__ = ["ARCHS", "DEFAULT_METRICS", "CompareConfig", "compare", "train_config", "train_configs", "format_markdown", "write_figure"]
