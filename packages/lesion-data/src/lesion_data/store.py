"""Prepared multi-resolution stores: every power-of-two level 4..R as memory-mapped uint8 arrays.

Layout of a store folder (written under a temporary name and renamed when complete, so a
half-written store is never mistaken for a finished one)::

    manifest.json            format, source, class names, counts, preprocessing, levels, content hash
    images_<res>.npy         uint8 (N, res, res, 3)     for res in 4, 8, ..., R
    masks_<res>.npy          uint8 (N, res, res), 0/1   only when the source has masks
    labels.npy               int64 (N,), -1 when unknown
    ids.json                 the source id of every row

Level R is the square crop area-resampled from the source; each lower level is the exact area
(box) average of level R over 2x2, 4x4, ... blocks, rounded once (as the PGGAN dataset tool does);
mask levels are nearest samples of mask level R (the pixel PIL's NEAREST would pick).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import uuid
from typing import Iterable, Sequence

import numpy as np

FORMAT = "lesion-gan-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """A store (or the data meant to become one) is missing, incomplete or invalid."""


def levels_for(resolution: int) -> list[int]:
    if resolution < 4 or resolution & (resolution - 1):
        raise StoreError(f"resolution must be a power of two >= 4, got {resolution}")
    return [2**k for k in range(2, resolution.bit_length())]


def downsample_levels(images: np.ndarray, masks: np.ndarray | None, resolution: int) -> dict[int, tuple]:
    """Lower levels of a batch at level R: ``{res: (images uint8, masks uint8 or None)}``."""
    out = {}
    acc = images.astype(np.float32)
    for res in reversed(levels_for(resolution)):
        if res != resolution:
            n = acc.shape[0]
            acc = acc.reshape(n, res, 2, res, 2, 3).mean(axis=(2, 4))
        f = resolution // res
        out[res] = (
            np.rint(acc).clip(0, 255).astype(np.uint8),
            None if masks is None else np.ascontiguousarray(masks[:, f // 2 :: f, f // 2 :: f]),
        )
    return out


class PreparedStore:
    """Read-only view of a finished store; raises StoreError when missing or incomplete."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no prepared store here (run `uv run apps/prepare_data SOURCE OUT`)")
        if not manifest_path.is_file():
            raise StoreError(f"{self.path}: incomplete store (no {MANIFEST}); prepare it again")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{manifest_path}: unreadable manifest ({e})") from None
        if self.manifest.get("format") != FORMAT or not self.manifest.get("complete"):
            raise StoreError(f"{manifest_path}: not a complete {FORMAT} manifest")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{manifest_path}: store format {self.manifest.get('format_version')}, "
                             f"this lesion-data reads {FORMAT_VERSION}; prepare it again")
        self.resolutions: list[int] = list(self.manifest["resolutions"])
        self.resolution: int = self.resolutions[-1]
        self.class_names: tuple[str, ...] = tuple(self.manifest["class_names"])
        self.has_masks: bool = bool(self.manifest["has_masks"])
        n = self.manifest["num_images"]
        self.labels: np.ndarray = self._load("labels.npy", (n,), np.int64)
        self._images = {r: self._load(f"images_{r}.npy", (n, r, r, 3), np.uint8) for r in self.resolutions}
        self._masks = (
            {r: self._load(f"masks_{r}.npy", (n, r, r), np.uint8) for r in self.resolutions} if self.has_masks else {}
        )

    def _load(self, name: str, shape: tuple, dtype) -> np.ndarray:
        path = self.path / name
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: missing or unreadable store array ({e})") from None
        if arr.shape != shape or arr.dtype != dtype:
            raise StoreError(f"{path}: expected {np.dtype(dtype)} {shape}, found {arr.dtype} {arr.shape}")
        return arr

    def __len__(self) -> int:
        return int(self.manifest["num_images"])

    def __repr__(self) -> str:
        return f"PreparedStore({str(self.path)!r}, n={len(self)}, resolutions={self.resolutions})"

    def _check(self, res: int) -> None:
        if res not in self._images:
            raise StoreError(f"{self.path}: no level {res} (has {self.resolutions})")

    def images(self, res: int) -> np.ndarray:
        self._check(res)
        return self._images[res]

    def masks(self, res: int) -> np.ndarray | None:
        self._check(res)
        return self._masks.get(res)

    @property
    def ids(self) -> list[str]:
        return json.loads((self.path / "ids.json").read_text())


class StoreWriter:
    """Writes a store row by row into a temporary sibling folder; ``finish`` renames it into place."""

    def __init__(self, path: str | os.PathLike, n: int, resolution: int, has_masks: bool):
        self.path = pathlib.Path(path)
        self.resolution, self.has_masks, self.n = resolution, has_masks, n
        self.levels = levels_for(resolution)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.count = 0
        fmt = np.lib.format
        self.images = {r: fmt.open_memmap(self.tmp / f"images_{r}.npy", "w+", np.uint8, (n, r, r, 3)) for r in self.levels}
        self.masks = (
            {r: fmt.open_memmap(self.tmp / f"masks_{r}.npy", "w+", np.uint8, (n, r, r)) for r in self.levels}
            if self.has_masks else {}
        )
        self.labels = np.full(n, -1, np.int64)
        self.ids: list[str] = []

    def append(self, images: np.ndarray, masks: np.ndarray | None, labels: Sequence[int], ids: Sequence[str]) -> None:
        """Append a batch at level R (uint8 (B,R,R,3), masks uint8 0/1 (B,R,R) or None)."""
        b = len(images)
        lo, hi = self.count, self.count + b
        for res, (im, mk) in downsample_levels(images, masks if self.has_masks else None, self.resolution).items():
            self.images[res][lo:hi] = im
            if self.has_masks:
                self.masks[res][lo:hi] = mk
        self.labels[lo:hi] = labels
        self.ids.extend(ids)
        self.count = hi

    def abort(self) -> None:
        self.images = self.masks = {}
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self, class_names: Sequence[str], source: dict, preprocessing: dict, extra: dict | None = None,
               keep_existing: bool = False) -> pathlib.Path:
        if self.count == 0:
            self.abort()
            raise StoreError(f"{self.path}: no usable images to store")
        arrays = [(f"{name}_{res}.npy", arr) for name, group in (("images", self.images), ("masks", self.masks))
                  for res, arr in group.items()]
        self.images = self.masks = {}
        while arrays:
            name, arr = arrays.pop()  # the only reference, so `del arr` below really unmaps
            arr.flush()
            if self.count < self.n:  # rows were skipped: copy the rows written into a shorter file
                trimmed = np.lib.format.open_memmap(self.tmp / f"{name}.part", "w+", np.uint8,
                                                    (self.count,) + arr.shape[1:])
                trimmed[:] = arr[: self.count]
                trimmed.flush()
                del trimmed, arr  # unmap both before the rename (required on Windows)
                os.replace(self.tmp / f"{name}.part", self.tmp / name)
        self.labels = self.labels[: self.count]
        np.save(self.tmp / "labels.npy", self.labels)
        (self.tmp / "ids.json").write_text(json.dumps(self.ids))
        counts = {name: int((self.labels == k).sum()) for k, name in enumerate(class_names)}
        counts["unknown"] = int((self.labels < 0).sum())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "complete": True,
            "num_images": self.count,
            "resolutions": self.levels,
            "has_masks": self.has_masks,
            "class_names": list(class_names),
            "counts": counts,
            "source": source,
            "preprocessing": preprocessing,
            "content_hash": content_hash(self.tmp, self.resolution, self.has_masks),
            **(extra or {}),
        }
        # The manifest is the completion marker, then the whole folder appears at once.
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return self._publish(keep_existing)

    def _publish(self, keep_existing: bool) -> pathlib.Path:
        """Rename the finished temporary folder onto the target. With ``keep_existing`` a complete
        store already there wins (concurrent builders of one cached store); otherwise an old store
        (or an empty folder) is replaced, and anything else is refused rather than deleted."""
        if self.path.exists():
            if keep_existing and _is_complete(self.path):
                shutil.rmtree(self.tmp, ignore_errors=True)
                return self.path
            if not (self.path / MANIFEST).is_file() and (not self.path.is_dir() or any(self.path.iterdir())):
                self.abort()
                raise StoreError(f"{self.path}: exists and is not a prepared store; refusing to replace it")
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
            return self.path
        try:
            os.replace(self.tmp, self.path)
        except OSError:
            if not (keep_existing and _is_complete(self.path)):
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)  # another process published it first
        return self.path


def _is_complete(path: pathlib.Path) -> bool:
    try:
        PreparedStore(path)
        return True
    except StoreError:
        return False


def content_hash(folder: pathlib.Path, resolution: int, has_masks: bool) -> str:
    """sha256 over the top level (images, masks) and labels: lower levels are derived from them."""
    h = hashlib.sha256()
    names = [f"images_{resolution}.npy"] + ([f"masks_{resolution}.npy"] if has_masks else []) + ["labels.npy"]
    for name in names:
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def write_store(
    path: str | os.PathLike,
    images: np.ndarray,
    masks: np.ndarray | None,
    labels: Iterable[int],
    class_names: Sequence[str],
    *,
    source: dict,
    preprocessing: dict,
    ids: Sequence[str] | None = None,
    batch: int = 256,
) -> pathlib.Path:
    """Write in-memory arrays at level R (images uint8 (N,R,R,3), masks 0/1 (N,R,R)) as a store."""
    labels = np.asarray(list(labels), np.int64)
    n, resolution = images.shape[0], images.shape[1]
    if images.shape != (n, resolution, resolution, 3) or images.dtype != np.uint8:
        raise StoreError(f"{path}: images must be uint8 (N, R, R, 3), got {images.dtype} {images.shape}")
    ids = list(ids) if ids is not None else [str(i) for i in range(n)]
    writer = StoreWriter(path, n, resolution, masks is not None)
    try:
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            writer.append(images[lo:hi], None if masks is None else masks[lo:hi], labels[lo:hi], ids[lo:hi])
        return writer.finish(class_names, source, preprocessing)
    except BaseException:
        writer.abort()
        raise


__all__ = ["PreparedStore", "StoreError", "StoreWriter", "write_store", "levels_for", "downsample_levels",
           "content_hash", "FORMAT", "FORMAT_VERSION", "MANIFEST"]
