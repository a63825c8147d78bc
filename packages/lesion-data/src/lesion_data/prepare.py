"""Preparing stores, and the one cache of prepared stores that every trainer and evaluator opens
data through (:func:`open_or_prepare`).

Cache layout (under ``$LESION_GAN_CACHE``, default ``~/.cache/lesion-gan``)::

    phantom-v<generator>-r<res>-n<n>-s<seed>[-balanced]/    built-in phantoms (keyed by what draws them)
    stores/<fingerprint>[-<layout>]-<res>/                   a dataset folder prepared at <res>

A folder's fingerprint hashes its file tree (every path, size and modification time), so a changed
or added file prepares it again, while the same folder given by another path or from another
program is prepared once.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Sequence

import numpy as np

from . import CLASS_NAMES
from .phantom import GENERATOR_VERSION, generate_phantoms
from .preprocess import DEFAULT_MARGIN, Task, process_safe
from .readers import Source, open_source
from .store import PreparedStore, StoreError, StoreWriter, levels_for


class PrepareError(StoreError):
    """Some source files are bad; ``problems`` holds one line per file. Nothing was written."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems

    def first_problems(self, count: int = 3) -> str:
        """The first ``count`` problems on one line, and how many more there are."""
        more = len(self.problems) - count
        return "; ".join(self.problems[:count]) + (f" (+{more} more)" if more > 0 else "")


def _pool_map(fn, items: list, workers: int, total: int, desc: str, progress: bool, weight=lambda result: 1):
    """Ordered results of ``fn`` over ``items`` with a progress bar, in a process pool when workers > 1."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    if workers <= 1 or len(items) <= 1:
        results = map(fn, items)
        pool = None
    else:
        import multiprocessing

        pool = multiprocessing.get_context().Pool(min(workers, len(items)))
        results = pool.imap(fn, items, chunksize=max(1, min(16, len(items) // (8 * workers))))
    try:
        for result in results:
            yield result
            bar.update(weight(result))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


def prepare_store(
    source,
    out: str | os.PathLike,
    resolution: int,
    *,
    margin: float | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
    draft: bool = True,
    layout: str | None = None,
    splits: Sequence[str] | None = None,
    keep_existing: bool = False,
) -> pathlib.Path:
    """Convert a source (a folder path or a ``readers.Source``) into a store at ``out``
    (``keep_existing``: if another process finished the same store first, keep that one).

    Every bad file (reader problems, unreadable/truncated images, wrong modes, mask size
    mismatches) is collected; without ``skip_bad`` a PrepareError lists them all and nothing is
    written, with ``skip_bad`` they are left out and listed in the manifest under ``skipped``."""
    margin = DEFAULT_MARGIN if margin is None else margin
    if margin < 0:
        raise StoreError(f"margin must be >= 0, got {margin}")
    levels_for(resolution)
    src = source if isinstance(source, Source) else open_source(source, layout, splits)
    problems = list(src.problems)
    records = src.records
    # Masks for some images only (e.g. a split without ground truth): report the others rather than
    # silently dropping every mask.
    has_masks = any(r.mask is not None for r in records)
    if has_masks:
        problems += [f"{r.image}: no mask, although other images have masks" for r in records if r.mask is None]
        records = [r for r in records if r.mask is not None]
    tasks = [(i, Task(r.image, r.mask, resolution, margin, draft)) for i, r in enumerate(records)]
    workers = workers or os.cpu_count() or 1
    writer = StoreWriter(out, len(records), resolution, has_masks) if records else None
    try:
        buffer: list[tuple] = []

        def flush() -> None:
            if buffer:
                writer.append(np.stack([b[1] for b in buffer]), np.stack([b[2] for b in buffer]) if has_masks else None,
                              [b[3] for b in buffer], [b[4] for b in buffer])
                buffer.clear()

        for index, image, mask, error in _pool_map(process_safe, tasks, workers, len(tasks), "prepare", progress):
            if error is not None:
                problems.append(error)
                continue
            record = records[index]
            buffer.append((index, image, mask, -1 if record.label is None else record.label, record.id))
            if len(buffer) >= 64:
                flush()
        flush()
        if problems and not skip_bad:
            raise PrepareError(f"{len(problems)} bad input file(s) in {src.root}", problems)
        if writer is None:
            raise PrepareError(f"{src.root}: no usable images", problems)
        preprocessing = {
            "crop": "square centred on the mask bounding box (image centre without a mask), shrunk to fit the image",
            "margin": margin,
            "image_resample": "area (PIL BOX) from the source" + (" after JPEG DCT-domain draft scaling" if draft else ""),
            "mask_resample": "nearest",
            "lower_levels": "exact block means of level R rounded once; masks nearest samples of level R",
        }
        return writer.finish(src.class_names, src.describe(), preprocessing, {"skipped": problems},
                             keep_existing=keep_existing)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _phantom_chunk(args: tuple[int, int, int, int, bool]):
    start, n, resolution, seed, balanced = args
    return generate_phantoms(n, resolution, seed, start=start, balanced=balanced)


def prepare_phantom_store(
    out: str | os.PathLike, resolution: int, n: int = 2000, seed: int = 0, *, balanced: bool = False,
    workers: int | None = None, progress: bool = True, keep_existing: bool = False,
) -> pathlib.Path:
    """Render ``n`` phantoms at ``resolution`` into a store at ``out``, in parallel chunks
    (``keep_existing``: if another process finished the same store first, keep that one)."""
    levels_for(resolution)
    chunk = max(1, min(64, 2**20 // (resolution * resolution)))  # small jobs keep every worker busy
    jobs = [(lo, min(chunk, n - lo), resolution, seed, balanced) for lo in range(0, n, chunk)]
    writer = StoreWriter(out, n, resolution, True)
    try:
        done = 0
        results = _pool_map(_phantom_chunk, jobs, workers or os.cpu_count() or 1, n, "phantoms", progress,
                            weight=lambda result: len(result[2]))
        for images, masks, labels in results:
            writer.append(images, masks, labels, [f"phantom_{i:06d}" for i in range(done, done + len(labels))])
            done += len(labels)
        source = {"layout": "phantom", "path": None, "generator_version": GENERATOR_VERSION, "seed": seed, "n": n,
                  "balanced": balanced}
        preprocessing = {"method": "rendered at the top level; lower levels exact block means, masks nearest"}
        return writer.finish(CLASS_NAMES, source, preprocessing, keep_existing=keep_existing)
    except BaseException:
        writer.abort()
        raise


# ---------------------------------------------------------------------------------------------
# The cache.


def default_cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("LESION_GAN_CACHE") or pathlib.Path.home() / ".cache" / "lesion-gan")


def _open_complete(path: pathlib.Path) -> PreparedStore | None:
    try:
        return PreparedStore(path)
    except StoreError:
        return None


def phantom_store(
    resolution: int = 32, n: int = 2000, seed: int = 0, root: str | os.PathLike | None = None, *, balanced: bool = False
) -> pathlib.Path:
    """Path of a prepared store of phantoms, built once and cached under ``root``.

    Safe when several processes ask at once: each builds into its own temporary folder and the
    first rename wins; the others discard their copy and use the finished one."""
    root = pathlib.Path(root) if root is not None else default_cache_root()
    path = root / (f"phantom-v{GENERATOR_VERSION}-r{resolution}-n{n}-s{seed}" + ("-balanced" if balanced else ""))
    if _open_complete(path) is None:
        prepare_phantom_store(path, resolution, n, seed, balanced=balanced, workers=1, progress=False,
                              keep_existing=True)
    return path


def tree_fingerprint(path: str | os.PathLike) -> str:
    """A hash of every file below ``path``: relative path, size and modification time."""
    path = pathlib.Path(path)
    stats = sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file())
    return hashlib.sha1(json.dumps(stats).encode()).hexdigest()[:16]


def open_or_prepare(
    source: str | os.PathLike | None,
    resolution: int,
    *,
    phantom_count: int = 2000,
    cache: str | os.PathLike | None = None,
    layout: str | None = None,
    progress: bool = True,
) -> PreparedStore:
    """The store to read ``resolution`` px images from: the built-in phantoms (``source`` None,
    ``phantom_count`` of seed 0), a prepared store as it is, or a dataset folder prepared once at
    ``resolution`` into ``cache`` (default :func:`default_cache_root`), keyed by its
    :func:`tree_fingerprint`. Raises StoreError (PrepareError listing bad files) when there is
    nothing to read or the store lacks the level."""
    root = pathlib.Path(cache) if cache is not None else default_cache_root()
    if source is None:
        store = PreparedStore(phantom_store(resolution, phantom_count, seed=0, root=root))
    else:
        path = pathlib.Path(source).expanduser()
        if not path.exists():
            raise StoreError(f"{path}: does not exist")
        if (path / "manifest.json").is_file():
            store = PreparedStore(path)
        elif not path.is_dir():
            raise StoreError(f"{path}: neither a prepared store nor a dataset folder")
        else:
            out = root / "stores" / "-".join([tree_fingerprint(path), *([layout] if layout else []), str(resolution)])
            store = _open_complete(out)
            if store is None:
                try:
                    store = PreparedStore(prepare_store(path, out, resolution, layout=layout, progress=progress,
                                                        keep_existing=True))
                except PrepareError as error:
                    if not error.problems:
                        raise
                    # Trainers and evaluate have no --skip-bad: prepare_data is where bad files are left out.
                    raise PrepareError(f"{error}: {error.first_problems()}; fix them, or leave them out with "
                                       f"`apps/prepare_data {path} STORE --resolution {resolution} --skip-bad` "
                                       "and pass STORE instead", error.problems) from None
    if resolution not in store.resolutions:
        raise StoreError(f"{store.path}: has no {resolution} px level (has {store.resolutions}); "
                         f"prepare it at {resolution} px or more")
    return store


__all__ = ["open_or_prepare", "tree_fingerprint", "phantom_store", "default_cache_root", "prepare_store",
           "prepare_phantom_store", "PrepareError"]
