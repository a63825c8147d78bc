"""Metric registry in the manner of StyleGAN's ``metric_main``: name -> function, one file per metric.

A metric function takes :class:`MetricOptions` and returns ``{result_name: float}``. Images reach it
as :class:`ImageSource` objects: re-iterable streams of uint8 NCHW torch batches, so 10k images at
1024 px never sit in memory at once. Inception features are extracted once per side and shared by
every metric that uses them (FID, KID, IS, precision/recall), and a real side with a ``cache_key``
has its features cached on disk per (dataset, resolution, extractor, count).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lesion_metrics import inception

_METRICS: dict[str, Callable[[MetricOptions], dict[str, float]]] = {}


class MetricUnavailable(Exception):
    """The metric cannot run with what the user gave (the reason is reported, no number is made up)."""


class NotEnoughImages(ValueError):
    """Too few images for a metric; the message says how many it needs."""


def register_metric(name: str):
    def decorator(fn):
        _METRICS[name] = fn
        return fn
    return decorator


def list_metrics() -> list[str]:
    return list(_METRICS)


def is_valid_metric(name: str) -> bool:
    return name in _METRICS


@dataclasses.dataclass
class ImageSource:
    """A named, re-iterable supply of uint8 (N, 3, H, W) torch batches."""

    name: str
    num_images: int
    batches: Callable[[], Iterable[torch.Tensor]]
    # Identity of a fixed dataset (content hash + resolution); set it to cache features on disk.
    cache_key: str | None = None
    # Class index per image (-1: unknown) and the class names, for the per-diagnosis figures.
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    @classmethod
    def from_array(cls, images, name: str, batch_size: int = 64, cache_key: str | None = None,
                   labels=None, class_names=()) -> ImageSource:
        """From a uint8 NCHW tensor or an NHWC numpy array / memmap (read one batch at a time)."""
        channels_last = isinstance(images, np.ndarray)

        def batches() -> Iterator[torch.Tensor]:
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                chunk = torch.from_numpy(np.array(chunk)).permute(0, 3, 1, 2) if channels_last else chunk
                yield chunk.contiguous()

        labels = None if labels is None else np.asarray(labels, np.int64)[:len(images)]
        return cls(name, len(images), batches, cache_key, labels, tuple(class_names))

    def gather(self, indices) -> torch.Tensor:
        """The images at ``indices`` (in that order), read in one pass over the source."""
        indices = [int(i) for i in indices]
        wanted = set(indices)
        found: dict[int, torch.Tensor] = {}
        start = 0
        for batch in self.iterate(max(indices, default=-1) + 1):
            for i in wanted.intersection(range(start, start + len(batch))):
                found[i] = batch[i - start]
            start += len(batch)
        return torch.stack([found[i] for i in indices]) if indices else torch.empty(0, 3, 0, 0, dtype=torch.uint8)

    def iterate(self, limit: int | None = None) -> Iterator[torch.Tensor]:
        """Batches up to ``limit`` images, checked to be uint8 NCHW RGB."""
        left = self.num_images if limit is None else limit
        for batch in self.batches():
            if left <= 0:
                return
            if not (isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8 and batch.ndim == 4 and batch.shape[1] == 3):
                raise TypeError(f"{self.name}: batches must be uint8 (N, 3, H, W) tensors, got "
                                f"{getattr(batch, 'dtype', type(batch))} {tuple(getattr(batch, 'shape', ()))}")
            yield batch[:left]
            left -= len(batch)


@dataclasses.dataclass
class FeatureExtractor:
    """A network mapping uint8 NCHW batches to ``{feature_name: (B, D)}``; ``name`` keys the cache."""

    name: str
    network: torch.nn.Module


@dataclasses.dataclass
class MetricOptions:
    real: ImageSource
    fake: ImageSource
    device: str = "cpu"
    seed: int = 0
    inception_weights: str | None = None
    cache_dir: str | None = None
    # Lesion-classifier features for the domain Frechet distance (None: that metric is unavailable).
    domain_extractor: FeatureExtractor | None = None
    batch_size: int = 32
    progress: bool = True
    # torch.compile the Inception network (inductor, weights frozen): ~30 s once per process, then
    # 1.44x the img/s on a CPU (features equal to 1e-6); pays from ~2,500 uncached images.
    compile: bool = False
    # Bootstrap resamples for the 95% intervals (0: none); each metric states its scheme.
    bootstrap: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    # Per result name: a 95% interval [lo, hi]; the reason its sample is too small to be stable;
    # and JSON data for the report (closest pairs, spectra). Reset by calc_metric.
    intervals: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    flags: dict[str, str] = dataclasses.field(default_factory=dict)
    artifacts: dict = dataclasses.field(default_factory=dict)
    _features: dict = dataclasses.field(default_factory=dict, repr=False)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def flag(self, result: str, reason: str) -> None:
        """Mark ``result`` as computed from fewer images than it needs to be stable."""
        self.flags[result] = reason

    def interval(self, result: str, lo: float, hi: float) -> None:
        self.intervals[result] = [float(lo), float(hi)]

    def inception_extractor(self) -> FeatureExtractor:
        net = inception.load_inception(self.inception_weights, self.cache_dir, self.device)
        # Same features either way (to float rounding), so compiled and eager share the feature cache.
        return FeatureExtractor(f"inception-2015-12-05-{inception.weights_id(self.inception_weights)}",
                                compile_network(net) if self.compile else net)

    def source(self, side: str) -> ImageSource:
        return {"real": self.real, "fake": self.fake}[side]

    def features(self, side: str, extractor: FeatureExtractor | None = None) -> dict[str, np.ndarray]:
        """Features of every image of one side, computed once (and cached on disk for keyed sources)."""
        extractor = extractor or self.inception_extractor()
        key = (side, extractor.name)
        if key not in self._features:
            src = self.source(side)
            path = None
            if src.cache_key is not None:
                digest = hashlib.sha1(f"{extractor.name}|{src.cache_key}|{src.num_images}".encode()).hexdigest()[:20]
                path = Path(self.cache_dir or inception.default_cache_dir()) / "features" / f"{digest}.npz"
            if path is not None and path.is_file():
                with np.load(path) as data:
                    self._features[key] = dict(data)
            else:
                self._features[key] = extract_features(src, extractor.network, self.device, self.progress)
                if path is not None:
                    _atomic_savez(path, self._features[key])
        return self._features[key]


@functools.lru_cache(maxsize=4)
def compile_network(network: torch.nn.Module) -> torch.nn.Module:
    """One compiled wrapper per (process-cached) network, so its graph is compiled once."""
    return torch.compile(network, dynamic=False, options={"freezing": True})


# On a CPU the network sees this many images at a time, whatever the source's batch: Inception ran
# 21.7 / 19.0 / 16.0 / 15.2 img/s at 8 / 16 / 32 / 64 (its activations stay in cache).
CPU_CHUNK = 8


def extract_features(source: ImageSource, network: torch.nn.Module, device: str, progress: bool = True) -> dict[str, np.ndarray]:
    """Features of every image of ``source``. The network always sees chunks of one size (the last
    padded with copies of its final image, whose features are dropped), so a compiled network
    compiles one graph; in eval mode images do not interact, so the padding changes nothing."""
    parts: dict[str, list[np.ndarray]] = {}
    size = 0
    with torch.no_grad(), tqdm(total=source.num_images, desc=f"features {source.name}", unit="img",
                               disable=not progress, leave=False) as bar:
        for batch in source.iterate():
            batch = batch.to(device)
            size = size or (min(CPU_CHUNK, len(batch)) if batch.device.type == "cpu" else len(batch))
            for chunk in batch.split(size):
                count = len(chunk)
                if count < size:
                    chunk = torch.cat([chunk, chunk[-1:].expand(size - count, *chunk.shape[1:])])
                for name, value in network(chunk).items():
                    parts.setdefault(name, []).append(value[:count].float().cpu().numpy())
            bar.update(len(batch))
    if not parts:
        raise NotEnoughImages(f"{source.name}: no images")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def require_images(metric: str, side: ImageSource, needed: int, why: str = "") -> None:
    if side.num_images < needed:
        raise NotEnoughImages(f"{metric} needs at least {needed} {side.name} images{why}, got {side.num_images}")


def calc_metric(name: str, opts: MetricOptions) -> dict:
    """Run one registered metric; a :class:`MetricUnavailable` becomes a result with its reason."""
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(_METRICS)}")
    opts.notes, opts.intervals, opts.flags, opts.artifacts = [], {}, {}, {}
    start = time.perf_counter()
    record = {"metric": name, "num_real": opts.real.num_images, "num_fake": opts.fake.num_images}
    try:
        record["results"] = {k: float(v) for k, v in _METRICS[name](opts).items()}
    except MetricUnavailable as why:
        record["results"] = {}
        record["unavailable"] = str(why)
    record["notes"] = list(opts.notes)
    record["flags"] = dict(opts.flags)
    record["intervals"] = dict(opts.intervals)
    if opts.intervals:
        record["bootstrap"] = opts.bootstrap
    if opts.artifacts:
        record["artifacts"] = opts.artifacts
    record["total_time"] = round(time.perf_counter() - start, 3)
    return record
