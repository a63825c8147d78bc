"""Evaluation orchestration behind ``uv run apps/evaluate``: real and generated image sources ->
lesion-metrics -> table, JSON, ``metrics/<metric>.jsonl`` in a run directory, and an HTML report.

- Real side: a prepared store (lesion-data), or any folder / ISIC / HAM10000 tree that lesion-data
  reads, prepared once at the generated resolution and cached (so are its Inception features).
- Generated side: a folder of images, a model directory saved with ``lesion_models.hub`` (samples
  generated on the fly, seeded), one snapshot directory (its ``G_ema``), or a run directory whose
  snapshots (``snapshots/<kimg>/G_ema``) are evaluated in turn; already evaluated snapshots (same n,
  seed, metric) are skipped on a re-run.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import html
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from lesion_data.prepare import open_or_prepare
from lesion_data.readers import list_image_files
from lesion_data.store import PreparedStore, StoreError
from lesion_metrics import FeatureExtractor, ImageSource, MetricOptions, NotEnoughImages, calc_metric, list_metrics
from lesion_metrics.inception import default_cache_dir
from lesion_models.hub import CONFIG_NAME, WEIGHTS_NAME, PretrainedLoadError, load_pretrained
from PIL import Image, ImageDraw
from tqdm import tqdm

from lesion_train.distributed import DistEnv, choose_device
from lesion_train.gan_loop import configure_threads
from lesion_train.runs import (
    STATE_NAME,
    JsonlLog,
    atomic_write_text,
    check_output_file,
    check_output_folder,
    find_model,
    image_grid,
    list_snapshots,
    to_uint8,
)
from lesion_train.sampling import compiled_for_inference, for_inference, pad_batch

DEFAULT_METRICS = ("fid", "kid", "is", "swd", "msssim", "pr", "domain_fd", "memorization", "spectral", "per_class")


class EvaluationError(RuntimeError):
    """A one-line, user-facing problem with the inputs of an evaluation; ``records`` holds the
    results computed before it (the app still prints them)."""

    def __init__(self, message: str, records: list[dict] | None = None):
        super().__init__(message)
        self.records = records or []


@dataclasses.dataclass
class EvaluateConfig:
    generated: str  # folder of images, model directory, or run directory
    real: str  # prepared store, or a folder / ISIC tree lesion-data reads
    metrics: tuple[str, ...] = ()  # empty: every metric that can run
    n: int = 10000  # generated images per model (and at most this many real ones)
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32  # images per Inception / generator batch
    resolution: int = 0  # 0: the generator's, or the generated images' size
    inception_weights: str | None = None  # pt_inception-2015-12-05 file (pytorch-fid): gives IS; None: fid-helper's
    domain_classifier: str | None = None  # lesion classifier model directory for the domain Frechet distance
    cache_dir: str | None = None  # None: $LESION_GAN_CACHE or ~/.cache/lesion-gan
    output: str | None = None  # JSON file with every record
    report: str | None = None  # directory for the HTML report
    progress: bool = True
    compile: bool = False  # torch.compile Inception and the generator: pays from ~2,500 generated images
    bootstrap: int = 200  # bootstrap resamples for the 95% intervals shown as value [lo, hi] (0: none)
    threads: int = 0  # torch CPU threads; 0 = auto: the idle cores, as the trainers choose


# ---------------------------------------------------------------------------------------------
# Sources


def _cache_root(config: EvaluateConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def open_store(path: Path, resolution: int, cache: Path, progress: bool) -> PreparedStore:
    """``lesion_data.prepare.open_or_prepare`` with its errors as one-line EvaluationErrors."""
    try:
        return open_or_prepare(path, resolution, cache=cache, progress=progress)
    except StoreError as error:  # a PrepareError names the first bad files itself
        raise EvaluationError(str(error)) from None
    except (ValueError, OSError) as error:
        raise EvaluationError(f"{path}: {error}") from None


def store_source(store: PreparedStore, resolution: int, limit: int, name: str, batch_size: int) -> ImageSource:
    images = store.images(resolution)[:limit]
    key = f"{store.manifest.get('content_hash', store.path)}:{resolution}"
    return ImageSource.from_array(images, name, batch_size, cache_key=key, labels=store.labels, class_names=store.class_names)


# Generated images up to this size are written once to a scratch array that every metric then
# reads (the Inception features, SWD and MS-SSIM each make a pass over the generated side, and
# generating for each pass tripled the generator's time); larger sets are generated per pass.
MATERIALIZE_BYTES = 4 << 30


def generator_source(generator: torch.nn.Module, n: int, seed: int, batch_size: int, device: torch.device,
                     name: str = "generated", compile: bool = False, materialize: bool = True,
                     progress: bool = False) -> ImageSource:
    """``n`` samples of ``G(z, labels)`` as uint8, the same ones on every pass (seeded per batch);
    conditional generators get the classes in turn (balanced). The generator runs as for sampling
    (eval, channels_last, inference mode), compiled with frozen weights if ``compile``, and always on
    full batches (the last one padded) so that a compiled generator compiles one graph."""
    num_classes = int(getattr(generator, "num_classes", 0) or 0)
    resolution = int(generator.resolution)
    G = for_inference(generator, device)
    G = compiled_for_inference(G) if compile else G

    @torch.inference_mode()
    def generate(start: int) -> torch.Tensor:
        count = min(batch_size, n - start)
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        z = pad_batch(torch.randn(count, generator.z_dim, generator=g), batch_size)  # the last batch padded
        labels = pad_batch(torch.arange(start, start + count) % num_classes, batch_size) if num_classes else None
        return to_uint8(G(z.to(device), None if labels is None else labels.to(device))[:count])

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, n, batch_size):
            yield generate(start)

    fits = materialize and n * 3 * resolution**2 <= MATERIALIZE_BYTES
    images = _scratch_array((n, resolution, resolution, 3)) if fits else None
    labels = np.arange(n) % num_classes if num_classes else None  # the classes asked for, as generate()
    if images is None:
        return ImageSource(name, n, batches, labels=labels)
    with tqdm(total=n, desc=f"generating {name}", unit="img", disable=not progress, leave=False) as bar:
        for start, batch in zip(range(0, n, batch_size), batches()):
            images[start:start + len(batch)] = batch.permute(0, 2, 3, 1).numpy()
            bar.update(len(batch))
    return ImageSource.from_array(images, name, batch_size, labels=labels)


def _scratch_array(shape: tuple[int, ...]) -> np.ndarray | None:
    """A uint8 array in an anonymous temporary file, whose disk space goes back as soon as the array
    is dropped; None when the temporary directory has no room. The space is reserved up front, so a
    full disk is found here rather than as a SIGBUS halfway through writing the mapped file."""
    with tempfile.TemporaryFile(prefix="lesion-eval-") as file:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(file.fileno(), 0, math.prod(shape))
            except OSError:
                return None
        return np.memmap(file, dtype=np.uint8, mode="w+", shape=shape)


def load_latent_generator(directory: Path, device: torch.device) -> torch.nn.Module:
    """The model in ``directory``, in eval mode, checked to be a latent-to-image generator
    (``z_dim`` and ``resolution``); EvaluationError otherwise."""
    try:
        model = load_pretrained(directory, device)
    except PretrainedLoadError as error:
        raise EvaluationError(str(error)) from None
    for attribute in ("z_dim", "resolution"):
        if not hasattr(model, attribute):
            raise EvaluationError(f"{directory}: {type(model).__name__} is not a generator (no {attribute})")
    return model.eval()


def load_domain_extractor(directory: str, device: torch.device) -> FeatureExtractor:
    """A lesion classifier (``forward(x in [-1, 1]) -> logits``) as a feature extractor: the input of
    its last linear layer (the penultimate features), fed uint8 batches."""
    try:
        model = load_pretrained(directory, device)
    except PretrainedLoadError as error:
        raise EvaluationError(str(error)) from None
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not heads:
        raise EvaluationError(f"{directory}: {type(model).__name__} has no linear head to take features before")

    class PenultimateFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model.eval()

        def forward(self, images):
            captured = []
            hook = heads[-1].register_forward_hook(lambda module, args, out: captured.append(args[0]))
            try:
                self.model(images.float() / 127.5 - 1)
            finally:
                hook.remove()
            return {"features": captured[0].flatten(1)}

    weights = Path(directory) / "model.safetensors"  # retrained in place -> new cache key
    digest = hashlib.sha1(f"{weights.resolve()}:{weights.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    return FeatureExtractor(f"classifier-{digest}", PenultimateFeatures())


# ---------------------------------------------------------------------------------------------
# Evaluation


def _targets(config: EvaluateConfig) -> tuple[str, list[tuple[str, int | None, object]]]:
    """('run' | 'model' | 'folder', [(label, kimg, generator dir or folder)]); a snapshot directory
    counts as its ``G_ema`` model."""
    path = Path(config.generated)
    if not path.exists():
        raise EvaluationError(f"{path}: does not exist")
    if (path / "snapshots").is_dir():
        snapshots = list_snapshots(path)
        if not snapshots:
            raise EvaluationError(f"{path}: run directory without complete snapshots")
        return "run", [(s.name, float(s.name), s / "G_ema") for s in snapshots]
    if (path / "config.json").is_file() or (path / "G_ema" / "config.json").is_file():  # a model or a snapshot
        return "model", [(path.name, None, find_model(path, prefer=("G_ema",)))]
    if (path / WEIGHTS_NAME).is_file() or (path / STATE_NAME).is_file() or (path / "G_ema").is_dir():
        raise EvaluationError(f"{path}: a model or snapshot directory without its config.json "
                              f"({path / ('G_ema' if (path / 'G_ema').is_dir() else '.') / CONFIG_NAME} is missing)")
    if path.is_dir():
        return "folder", [(path.name, None, path)]
    raise EvaluationError(f"{path}: not a folder, model directory or run directory")


def _already_done(run_dir: Path, metric: str, label: str, n: int, seed: int) -> dict | None:
    path = run_dir / "metrics" / f"{metric}.jsonl"
    if not path.is_file():
        return None
    for record in JsonlLog(path).read():
        if record.get("snapshot") == label and record.get("n") == n and record.get("seed") == seed:
            return record
    return None


def evaluate(config: EvaluateConfig) -> list[dict]:
    """Evaluate every target; returns one record per (target, metric)."""
    for name in config.metrics:
        if name not in list_metrics():
            raise EvaluationError(f"unknown metric {name!r}; valid: {', '.join(list_metrics())}")
    if config.n < 1:
        raise EvaluationError(f"--n must be positive, got {config.n}")
    if config.bootstrap < 0:
        raise EvaluationError(f"--bootstrap must be 0 (no intervals) or more, got {config.bootstrap}")
    # Output paths first: a wrong one must not cost the whole evaluation.
    try:
        if config.output:
            check_output_file(config.output, "--json")
        if config.report:
            check_output_folder(config.report, "--report")
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    device = choose_device(config.device)
    configure_threads(config.threads, DistEnv(device=device))
    cache = _cache_root(config)
    kind, targets = _targets(config)
    metrics = list(config.metrics or DEFAULT_METRICS)
    domain = load_domain_extractor(config.domain_classifier, device) if config.domain_classifier else None
    records: list[dict] = []
    samples: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}  # per target and space: closest real / generated pairs
    real_store = None
    for label, kimg, target in targets:
        pending = [m for m in metrics if kind != "run" or _already_done(Path(config.generated), m, label, config.n, config.seed) is None]
        records += [dict(r, reused=True) for m in metrics if kind == "run"
                    and (r := _already_done(Path(config.generated), m, label, config.n, config.seed)) is not None]
        if not pending and not config.report:  # a report still shows this snapshot's samples
            continue
        if kind == "folder":
            # Generated folders are prepared like real data (square crop, area resize) into a
            # temporary store that lives until the process ends.
            scratch = Path(tempfile.mkdtemp(prefix="lesion-eval-"))
            atexit.register(shutil.rmtree, scratch, True)
            fake_store = open_store(Path(target), config.resolution or _first_image_size(Path(target)), scratch, config.progress)
            resolution = config.resolution or fake_store.resolution
            fake = store_source(fake_store, resolution, config.n, "generated", config.batch_size)
        else:
            generator = load_latent_generator(Path(target), device)
            resolution = config.resolution or int(generator.resolution)
            if resolution != int(generator.resolution):
                raise EvaluationError(f"{target}: generates {generator.resolution} px, not --resolution {resolution}")
            # Only the sample grid is needed when every metric was reused: generate no more.
            fake = generator_source(generator, config.n, config.seed, config.batch_size, device, compile=config.compile,
                                    materialize=bool(pending), progress=config.progress)
        if real_store is None or resolution not in real_store.resolutions:
            # A growing run's snapshots need the real data at each resolution (a folder is prepared
            # again at the larger one; a given store without the level fails below, saying so).
            real_store = open_store(Path(config.real), resolution, cache, config.progress)
        real = store_source(real_store, resolution, config.n, "real", config.batch_size)
        opts = MetricOptions(real, fake, device=str(device), seed=config.seed, inception_weights=config.inception_weights,
                             cache_dir=str(cache), domain_extractor=domain, batch_size=config.batch_size,
                             progress=config.progress, compile=config.compile, bootstrap=config.bootstrap)
        samples.setdefault("real", next(iter(real.iterate(16))))
        samples[label] = next(iter(fake.iterate(16)))
        for metric in pending:
            try:
                record = calc_metric(metric, opts)
            except NotEnoughImages as error:
                if config.metrics:  # asked for by name: an error; by default: reported as not computed
                    raise
                record = {"metric": metric, "results": {}, "unavailable": str(error), "notes": []}
            record.update(snapshot=label, kimg=kimg, n=config.n, seed=config.seed, resolution=resolution,
                          generated=str(config.generated), real=str(config.real))
            for space, closest in record.get("artifacts", {}).get("closest_pairs", {}).items():
                pairs.setdefault(label, {})[space] = torch.stack([real.gather([p["real"] for p in closest]),
                                                                   fake.gather([p["generated"] for p in closest])], 1)
            records.append(record)
            if kind == "run":
                (Path(config.generated) / "metrics").mkdir(exist_ok=True)
                JsonlLog(Path(config.generated) / "metrics" / f"{metric}.jsonl").append(record)
    try:
        if config.output:
            atomic_write_text(Path(config.output), json.dumps(records, indent=2) + "\n")
        if config.report:
            write_report(Path(config.report), records, samples, kind, pairs)
    except OSError as error:
        raise EvaluationError(f"{error.filename or config.output}: cannot write ({error.strerror or error})", records) from None
    return records


def _first_image_size(folder: Path) -> int:
    for path in list_image_files(folder, recursive=True)[:1]:
        try:
            with Image.open(path) as image:
                return min(image.size)
        except OSError as error:
            raise EvaluationError(f"{path}: unreadable image ({error})") from None
    raise EvaluationError(f"{folder}: no images found")


# ---------------------------------------------------------------------------------------------
# Presentation


def format_value(record: dict, key: str) -> str:
    """``value [lo, hi]`` with the bootstrap interval when there is one, ``*`` when the figure is
    flagged as computed from too few images to be stable."""
    text = f"{record['results'][key]:.4f}"
    if key in record.get("intervals", {}):
        lo, hi = record["intervals"][key]
        text += f" [{lo:.4f}, {hi:.4f}]"
    return text + (" *" if key in record.get("flags", {}) else "")


def format_table(records: list[dict]) -> str:
    """One line per (target, result); unavailable metrics say why; notes and the reasons for the
    ``*`` flags follow the table."""
    lines = [f"{'snapshot':<16} {'metric':<24} {'value [95% interval]':>12}"]
    notes: list[str] = []
    for r in records:
        if r.get("unavailable"):
            lines.append(f"{r['snapshot']:<16} {r['metric']:<24} {'n/a':>12}  ({r['unavailable']})")
        for key in r["results"]:
            lines.append(f"{r['snapshot']:<16} {key:<24} {format_value(r, key):>12}" + ("  (cached)" if r.get("reused") else ""))
        notes += [n for n in r.get("notes", []) if n not in notes]
        notes += [n for key, why in r.get("flags", {}).items() if (n := f"* {key}: {why}") not in notes]
        if r.get("intervals") and (n := f"intervals: {r['bootstrap']} bootstrap resamples of both sides") not in notes:
            notes.append(n)
    return "\n".join(lines + [f"note: {n}" for n in notes])


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def curve_image(title: str, points: list[tuple[float, float]] | dict[str, list[tuple[float, float]]],
                labels: list[str] | dict[str, list[str]] | None = None, x_unit: str = "kimg") -> Image.Image:
    """A small line chart (a metric against kimg, or named series, each in its colour, the names
    written as a legend) drawn with PIL; ``labels`` (a list, or one per series name) are written
    above the points. A NaN (SWD of flat images) is left out of its line."""
    width, height, margin = 420, 260, 48
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    series = points if isinstance(points, dict) else {"": points}
    texts = labels if isinstance(labels, dict) else {"": labels} if labels else {}
    finite = [p for s in series.values() for p in s if math.isfinite(p[1])] or [(0.0, 0.0)]
    xs, ys = [p[0] for p in finite], [p[1] for p in finite]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    if math.isclose(y0, y1):
        y0, y1 = y0 - 1, y1 + 1

    def xy(x, y):
        return (margin + (x - x0) / (x1 - x0) * (width - 2 * margin),
                height - margin - (y - y0) / (y1 - y0) * (height - 2 * margin))

    draw.rectangle([margin, margin, width - margin, height - margin], outline="#888")
    draw.text((margin, 12), title, fill="black")
    draw.text((4, margin - 6), f"{y1:.4g}", fill="black")
    draw.text((4, height - margin - 6), f"{y0:.4g}", fill="black")
    draw.text((margin, height - margin + 8), f"{x0:g} {x_unit}", fill="black")
    draw.text((width - margin - 60, height - margin + 8), f"{x1:g} {x_unit}", fill="black")
    for k, (name, values) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        names = texts.get(name)
        kept = [(xy(x, y), names[i] if names else None) for i, (x, y) in enumerate(values) if math.isfinite(y)]
        if len(kept) > 1:
            draw.line([p for p, _ in kept], fill=colour, width=2)
        for (px, py), text in (kept if len(kept) < 40 else []):  # dense curves: no markers
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            if text:
                draw.text((px - 12, py - 16), text, fill="#555")
        draw.text((width - margin - 80, margin + 4 + 12 * k), name, fill=colour)
    return image


def _curve_png(path: Path, title: str, points: list[tuple[float, float]] | dict[str, list[tuple[float, float]]],
               labels: list[str] | None = None, x_unit: str = "kimg") -> None:
    """``curve_image`` saved to ``path``."""
    curve_image(title, points, labels, x_unit).save(path)


def write_report(directory: Path, records: list[dict], samples: dict[str, torch.Tensor], kind: str,
                 pairs: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """index.html with the metric table (``value [lo, hi]``, ``*`` on flagged figures), real and
    generated grids side by side, the closest real / generated pairs, the power spectra, and (run
    dirs) every metric across snapshots as a PNG curve."""
    directory.mkdir(parents=True, exist_ok=True)
    grids = {}
    for name, images in samples.items():
        file = f"grid_{name}.png"
        Image.fromarray(image_grid(images.float() / 127.5 - 1, ncol=4)).save(directory / file)
        grids[name] = file
    # One row per snapshot / model, one column per result: progress reads down a column.
    columns: list[str] = []
    table: dict[str, dict[str, str]] = {}
    flags: dict[str, str] = {}
    resolution: dict[str, int] = {}
    missing: dict[str, str] = {}
    for r in records:
        resolution[r["snapshot"]] = r.get("resolution")
        for key in r["results"]:
            columns += [key] if key not in columns else []
            table.setdefault(r["snapshot"], {})[key] = format_value(r, key)
        flags.update(r.get("flags", {}))
        if r.get("unavailable"):
            missing[r["metric"]] = r["unavailable"]
    curves = []
    if kind == "run":
        series: dict[str, list[tuple[int, float, int]]] = {}
        for r in records:
            for key, value in r["results"].items():
                series.setdefault(key, []).append((r["kimg"], value, r.get("resolution")))
        for key, points in series.items():
            if len(points) >= 1 and "baseline" not in key:
                points.sort()
                # A growing run's snapshots differ in resolution (SWD even in its levels): say which is which.
                labels = [f"{p[2]}px" for p in points] if len({p[2] for p in points}) > 1 else None
                file = f"curve_{key}.png"
                _curve_png(directory / file, key, [p[:2] for p in points], labels)
                curves.append(file)
    figures = []
    for name, spaces in (pairs or {}).items():
        for space, images in spaces.items():
            file = f"closest_{name}_{space}.png"
            Image.fromarray(image_grid(images.flatten(0, 1).float() / 127.5 - 1, ncol=2)).save(directory / file)
            figures.append((file, f"{name}, {space}: nearest real (left) to the closest generated (right)"))
    for r in records:
        if "spectrum" in r.get("artifacts", {}):
            spectrum, file = r["artifacts"]["spectrum"], f"spectrum_{r['snapshot']}.png"
            _curve_png(directory / file, f"{r['snapshot']}: power (dB) per radial frequency",
                       {side: [(f, 10 * math.log10(max(p, 1e-30))) for f, p in zip(spectrum["frequency"], spectrum[side])]
                        for side in ("real", "generated")}, x_unit="cycles/px")
            figures.append((file, f"{r['snapshot']}: azimuthally averaged power spectra"))
    notes = sorted({n for r in records for n in r.get("notes", [])})
    notes += [f"* {key}: {why}" for key, why in flags.items()]
    bootstraps = sorted({r["bootstrap"] for r in records if r.get("intervals")})
    notes += [f"[lo, hi]: 95% bootstrap interval, {b} resamples of both sides" for b in bootstraps]
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in columns)

    def row(name: str, values: dict[str, str]) -> str:
        label = name + (f" ({resolution[name]} px)" if resolution.get(name) else "")
        cells = "".join(f"<td>{e(values[c])}</td>" if c in values else "<td></td>" for c in columns)
        return f"<tr><td>{e(label)}</td>{cells}</tr>"

    body = "".join(row(name, values) for name, values in table.items())
    latest = [k for k in grids if k != "real"][-1:] if len(grids) > 1 else []
    grid_html = "".join(f"<figure><img src='{e(grids[k])}'><figcaption>{e(k)}</figcaption></figure>"
                        for k in ["real"] + latest if k in grids)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lesion-gan evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:0 1em 1em 0}}figure img{{image-rendering:pixelated;width:320px}}</style></head><body>
<h1>Evaluation</h1><table><tr><th>snapshot</th>{head}</tr>{body}</table>
{''.join(f'<p>not computed: <b>{e(m)}</b>: {e(why)}</p>' for m, why in missing.items())}
{''.join(f'<p>note: {e(n)}</p>' for n in notes)}
<h2>Samples: real and generated</h2>{grid_html}
{'<h2>Memorization and spectra</h2>' + ''.join(f"<figure><img src='{e(f)}'><figcaption>{e(c)}</figcaption></figure>" for f, c in figures) if figures else ''}
{'<h2>Training progress</h2>' + ''.join(f"<img src='{e(c)}'>" for c in curves) if curves else ''}
</body></html>"""
    atomic_write_text(directory / "index.html", page)
    return directory / "index.html"
