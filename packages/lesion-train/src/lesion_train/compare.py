"""The unconditional comparison behind ``uv run apps/compare_unconditional``: PGGAN, DCGAN and LAPGAN
trained on the same data with the same number of real images shown and the same seed, each final
``G_ema`` evaluated by ``lesion_train.evaluation`` against the same real images, then one table
(Markdown + JSON) and one figure (reals and a sample grid per architecture, side by side).

Fairness: every architecture gets ``budget_kimg`` thousand real images. PGGAN's progressive schedule
is compressed when it would not reach the target resolution within the budget (equal stabilise and
fade phases, the last stabilisation two thirds of a phase, the proportions of the ``cpu`` preset),
so every model is judged at full resolution. A re-run with the same output folder reuses finished
trainings (a run that reached the budget) and the evaluations already recorded in
``evaluations.jsonl`` (same snapshot, metric, n and seed).

Checkpoints: every metric is also recorded at fractions of the budget (``checkpoints``, default
25/50/100%), each at the snapshot nearest that fraction (runs snapshot every tick), and drawn as
metric-vs-kimg curves per architecture (``curves.png``), so a reader sees whether the ranking is
stable or still moving. A PGGAN snapshot taken before the target resolution is faded in is
evaluated at its own resolution (the ``px`` column). The pieces shared with the mask-to-image
comparison (``lesion_train.compare_translation``) live here: reuse of finished runs, checkpoint
selection, the evaluation cache, the table, the curves and the figure.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from lesion_train import baselines, gan_loop, pggan, runs, setup
from lesion_train.distributed import DistEnv, choose_device
from lesion_train.evaluation import EvaluateConfig, curve_image, evaluate, format_value, load_latent_generator

ARCHS = ("pggan", *baselines.ARCHS)
DEFAULT_METRICS = ("swd", "msssim", "fid", "kid", "pr")
CHECKPOINTS = (0.25, 0.5, 1.0)
MIN_METRIC_RESOLUTION = 16  # SWD's pyramid and MS-SSIM's five scales start there


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
    checkpoints: tuple[float, ...] = CHECKPOINTS  # fractions of --kimg at which every metric is recorded
    overrides: dict = dataclasses.field(default_factory=dict)  # arch -> {option: value} on top of the preset
    progress: bool = True

    def __post_init__(self):
        unknown = [a for a in self.archs if a not in ARCHS]
        if unknown or not self.archs:
            raise ValueError(f"archs must be a non-empty subset of {ARCHS}, got {list(self.archs)}")
        check_budget(self.budget_kimg, self.checkpoints)


def check_budget(budget_kimg: float, checkpoints: tuple[float, ...]) -> None:
    if budget_kimg <= 0:
        raise ValueError(f"--kimg must be positive, got {budget_kimg}")
    if not checkpoints or not all(0 < f <= 1 for f in checkpoints):
        raise ValueError(f"--checkpoints must be fractions of the budget in (0, 1], got {list(checkpoints)}")


def train_config(config: CompareConfig, arch: str):
    """The training config of one architecture: its preset, the shared data/budget/seed, overrides."""
    shared = {
        "data": config.data, "resolution": config.resolution, "phantom_count": config.phantom_count,
        "loop.total_kimg": config.budget_kimg, "loop.seed": config.seed, "loop.run_root": str(Path(config.out) / "runs"),
        "loop.name": arch, "loop.device": config.device, "loop.cpu_threads": config.cpu_threads,
        "loop.snapshot_ticks": 1,  # a snapshot per tick: the checkpoints pick the nearest
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


def _train(config: CompareConfig, arch: str) -> tuple[Path, str | None]:
    def train() -> Path:
        train = train_config(config, arch)
        return (pggan.train_pggan(train) if arch == "pggan" else baselines.train_baseline(train)).run_dir

    return train_or_reuse(Path(config.out) / "runs", arch, config.budget_kimg, train)


STOPPED_NAME = "stopped.txt"  # in a run that a non-finite loss stopped: the error, so a re-run reuses it


def train_or_reuse(runs_root: Path, name: str, budget_kimg: float, train: Callable[[], Path]) -> tuple[Path, str | None]:
    """(run directory, why it stopped early or None) of ``name``: a finished or stopped run of this
    comparison folder, else a new one from ``train()``. A run that a non-finite loss stops keeps the
    snapshots it saved and is compared with those, rather than ending the whole comparison."""
    run = finished_run(runs_root, name, budget_kimg)
    if run is None:
        try:
            run = train()
        except runs.NonFiniteLossError as error:
            run = max(Path(runs_root).glob(f"*-{name}"))  # the run that just stopped: the newest of its name
            runs.atomic_write_text(run / STOPPED_NAME, f"{error}\n")
    stopped = run / STOPPED_NAME
    return run, stopped.read_text().strip() if stopped.is_file() else None


def finished_run(runs_root: Path, name: str, budget_kimg: float) -> Path | None:
    """The newest run ``runs_root/*-<name>`` whose newest snapshot reached the budget, or that a
    non-finite loss stopped (``stopped.txt``)."""
    for run in sorted(Path(runs_root).glob(f"*-{name}"), reverse=True):
        snapshot = runs.latest_snapshot(run)
        if snapshot is not None and ((run / STOPPED_NAME).is_file()
                                     or runs.load_training_state(snapshot)["nimg"] >= budget_kimg * 1000):
            return run
    return None


def train_seconds(run: Path, kimg: float = math.inf) -> float:
    """Training wall seconds up to ``kimg``, from the run's log (so a reused run reports them too)."""
    return sum(r["sec_per_tick"] for r in runs.JsonlLog(run / runs.LOG_NAME).read() if r["kimg"] <= kimg + 1e-9)


def checkpoint_snapshots(run: Path, budget_kimg: float, fractions: tuple[float, ...]) -> list[tuple[float, Path, float]]:
    """(fraction, snapshot, kimg) of the snapshot nearest each fraction of the budget, by the images
    it has seen, oldest first; a snapshot nearest to several fractions is listed once, for the largest."""
    snapshots = [(runs.load_training_state(s)["nimg"] / 1000, s) for s in runs.list_snapshots(run)]
    if not snapshots:
        raise ValueError(f"{run}: has no complete snapshot")
    chosen: list[tuple[float, Path, float]] = []
    for fraction in sorted(fractions, reverse=True):
        kimg, snapshot = min(snapshots, key=lambda item: abs(item[0] - fraction * budget_kimg))
        if snapshot not in [c[1] for c in chosen]:
            chosen.append((fraction, snapshot, kimg))
    return chosen[::-1]


class EvaluationCache:
    """Evaluation records of a comparison folder (``evaluations.jsonl``), keyed by what decides
    them (architecture, snapshot, metric, n, seed, ...), so a re-run skips what is recorded."""

    def __init__(self, path: Path):
        self.log = runs.JsonlLog(path)
        self.records = {r["key"]: r for r in self.log.read()}

    @staticmethod
    def _key(key: dict) -> str:
        return json.dumps(runs.to_jsonable(key), sort_keys=True)

    def get(self, key: dict) -> dict | None:
        return self.records.get(self._key(key))

    def put(self, key: dict, record: dict) -> dict:
        record = {**record, "key": self._key(key)}
        self.log.append(record)
        self.records[record["key"]] = record
        return record


def _labelled(grid: np.ndarray, label: str) -> Image.Image:
    text_width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label)) + 8  # a narrow column still shows its label
    image = Image.new("RGB", (max(grid.shape[1], text_width), grid.shape[0] + 16), "white")
    image.paste(Image.fromarray(grid), (0, 16))
    ImageDraw.Draw(image).text((4, 2), label, fill="black")
    return image


def write_figure(path: Path, panels: list[tuple[str, torch.Tensor]], ncol: int = 8) -> Path:
    """Panels (label, images in [-1, 1]) side by side, ``ncol`` columns each, one labelled grid per panel."""
    images = [_labelled(runs.image_grid(x, ncol=ncol), label) for label, x in panels]
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
    if real == fake <= 1000:
        note += " (its 100 subsets of up to 1000 images are then the whole sets, so kid_std is 0)"
    elif min(real, fake) < 1000:
        note += (f" (its 100 subsets have {min(real, fake)} images, the smaller set, fewer than the 1000 KID is "
                 "defined with; kid_std is their spread)")
    return [note]


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| arch | kimg | px | train min | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 4)]
    for row in rows:
        values = [format_value(row, c) if c in row["results"] else "n/a" for c in columns]
        lines.append(f"| {row['arch']} | {row['kimg']:g} | {row['resolution']} | {row['train_seconds'] / 60:.1f} | "
                     + " | ".join(values) + " |")
    return lines


def final_rows(checkpoints: list[dict]) -> list[dict]:
    """Each architecture's row at its last checkpoint, in the order of first appearance."""
    last: dict[str, dict] = {}
    for row in checkpoints:
        if row["arch"] not in last or row["kimg"] >= last[row["arch"]]["kimg"]:
            last[row["arch"]] = row
    return list(last.values())


def format_markdown(checkpoints: list[dict], notes: list[str] = ()) -> str:
    """The table at the full budget, then every checkpoint (grouped by fraction of the budget, so
    each block is a ranking at that point), then the notes and the reasons for ``*`` flags."""
    rows = final_rows(checkpoints)
    columns = _columns(rows + checkpoints)  # the full budget's order (an early PGGAN snapshot lacks levels)
    lines = _table(rows, columns)
    fractions = sorted({row["checkpoint"] for row in checkpoints})
    if len(checkpoints) > len(rows):
        lines += ["", "Every checkpoint (the snapshot nearest each fraction of the budget):", ""]
        lines += _table(sorted(checkpoints, key=lambda r: (fractions.index(r["checkpoint"]), r["kimg"])), columns)
    notes = [*notes, *_inception_note(rows), *sorted({note for row in checkpoints for note in row["notes"]})]
    notes += sorted({f"* {row['arch']} {key}: {why}" for row in checkpoints for key, why in row.get("flags", {}).items()})
    notes += sorted({f"[lo, hi]: 95% bootstrap interval, {row['bootstrap']} resamples of both sides"
                     for row in checkpoints if row.get("intervals")})
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def write_curves(path: Path, checkpoints: list[dict]) -> Path:
    """One panel per result (``evaluation.curve_image``), one line per architecture: metric against kimg."""
    panels = []
    archs = list(dict.fromkeys(row["arch"] for row in checkpoints))  # one colour per arch in every panel
    ordered = sorted(checkpoints, key=lambda r: r["kimg"])
    # Resolutions are written above the points only where they differ (a growing PGGAN).
    varying = len({row["resolution"] for row in checkpoints}) > 1
    # Real-only references are one value, a spread (kid_std) is no ranking.
    for column in [c for c in _columns(final_rows(checkpoints) + checkpoints) if "real" not in c and not c.endswith("_std")]:
        series = {arch: [(r["kimg"], r["results"][column]) for r in ordered if r["arch"] == arch and column in r["results"]]
                  for arch in archs}
        labels = {arch: [f"{r['resolution']}px" for r in ordered if r["arch"] == arch and column in r["results"]]
                  for arch in archs}
        panels.append(curve_image(column, series, labels if varying else None))
    per_row = 3
    width, height = panels[0].size
    figure = Image.new("RGB", (width * min(per_row, len(panels)), height * math.ceil(len(panels) / per_row)), "white")
    for index, panel in enumerate(panels):
        figure.paste(panel, ((index % per_row) * width, (index // per_row) * height))
    return runs.atomic_save_image(figure, path)


def write_outputs(out: Path, document: dict, notes: list[str], panels: list[tuple[str, torch.Tensor]],
                  ncol: int = 8) -> dict:
    """``results.json`` (``document`` with ``rows`` at the full budget and every ``checkpoints`` row),
    ``table.md``, ``curves.png`` and ``comparison.png`` in ``out``; returns the document with their paths."""
    document = {**document, "rows": final_rows(document["checkpoints"]), "notes": list(notes)}
    runs.atomic_write_bytes(out / "results.json", (json.dumps(runs.to_jsonable(document), indent=2) + "\n").encode())
    runs.atomic_write_text(out / "table.md", format_markdown(document["checkpoints"], notes))
    document["curves"] = str(write_curves(out / "curves.png", document["checkpoints"]))
    document["figure"] = str(write_figure(out / "comparison.png", panels, ncol))
    document["table"] = str(out / "table.md")
    return document


def summary(document: dict) -> str:
    """What a comparison app prints: the table, then where the table and the figures are."""
    paths = [f"{key}: {document[key]}" for key in ("table", "figure", "curves")]
    return "\n".join([Path(document["table"]).read_text(), *paths])


def compare(config: CompareConfig) -> dict:
    """Train (or reuse) every architecture and evaluate it at each checkpoint (or reuse the
    recorded evaluation); write ``table.md``, ``results.json``, ``curves.png`` and
    ``comparison.png`` into ``config.out``; return the JSON document."""
    train_configs(config)
    out = runs.check_output_folder(config.out)
    out.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_bytes(out / "compare_options.json", (json.dumps(runs.to_jsonable(config), indent=2) + "\n").encode())
    device = choose_device(config.device)
    store = setup.open_data(train_config(config, config.archs[0]), DistEnv())
    real = runs.from_uint8(store.images(config.resolution)[:64])
    panels: list[tuple[str, torch.Tensor]] = [("real", real)]
    cache = EvaluationCache(out / "evaluations.jsonl")
    rows, skipped = [], []
    for arch in config.archs:
        run, stopped = _train(config, arch)
        if stopped:
            skipped.append(f"{arch}: training stopped before the budget ({stopped}); its rows are the snapshots "
                           "it saved before")
        for fraction, snapshot, kimg in checkpoint_snapshots(run, config.budget_kimg, config.checkpoints):
            G = load_latent_generator(snapshot / "G_ema", device)
            if fraction == max(config.checkpoints) and int(G.resolution) != config.resolution and not stopped:
                raise ValueError(f"{arch}: {run} ended at {G.resolution} px, not {config.resolution} px; raise --kimg")
            if G.resolution < MIN_METRIC_RESOLUTION:
                skipped.append(f"{arch} at {kimg:g} kimg ({fraction:g} of the budget) is still at {G.resolution} px, "
                               f"below the {MIN_METRIC_RESOLUTION} px SWD and MS-SSIM need: left out")
                continue
            keys = {metric: {"arch": arch, "snapshot": str(snapshot), "nimg": round(kimg * 1000), "metric": metric,
                             "n": config.n, "seed": config.seed} for metric in config.metrics}
            pending = tuple(metric for metric, key in keys.items() if cache.get(key) is None)
            if pending:  # one evaluation for all of them: the generated images and features are shared
                for record in evaluate(EvaluateConfig(generated=str(snapshot / "G_ema"), real=str(store.path),
                                                      metrics=pending, n=config.n, seed=config.seed,
                                                      device=config.device, progress=config.progress,
                                                      threads=config.cpu_threads)):
                    cache.put(keys[record["metric"]], record)
            results, notes, intervals, flags, counts, bootstrap = {}, [], {}, {}, {}, 0
            for key in keys.values():
                record = cache.get(key)
                results.update(record["results"])
                intervals.update(record.get("intervals", {}))
                flags.update(record.get("flags", {}))
                notes += [n for n in record.get("notes", []) if n not in notes]
                counts = {"num_real": record["num_real"], "num_fake": record["num_fake"]}
                bootstrap = max(bootstrap, record.get("bootstrap", 0))
            rows.append({"arch": arch, "checkpoint": fraction, "run": str(run), "snapshot": str(snapshot), "kimg": kimg,
                         "resolution": int(G.resolution), "train_seconds": round(train_seconds(run, kimg), 1),
                         **counts, "results": results, "notes": notes, "intervals": intervals, "flags": flags,
                         "bootstrap": bootstrap})
        z, _ = gan_loop.fixed_latents(G, 64, config.seed, device)
        panels.append((arch, gan_loop.generate_grid(G, z, None).cpu()))
    document = {"config": runs.to_jsonable(config), "store": str(store.path), "checkpoints": rows}
    return write_outputs(out, document, skipped, panels)


__all__ = ["ARCHS", "CHECKPOINTS", "DEFAULT_METRICS", "CompareConfig", "EvaluationCache", "check_budget",
           "checkpoint_snapshots", "compare", "final_rows", "finished_run", "format_markdown", "train_config", "train_or_reuse",
           "train_configs", "train_seconds", "write_curves", "write_figure", "write_outputs"]
