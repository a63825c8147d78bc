"""Run directories shared by every trainer.

    runs/<YYYYmmdd-HHMMSS>-<name>/
      training_options.json     every resolved option, written first
      log.jsonl                 one line per tick
      grids/fakes_<kimg>.png
      snapshots/<kimg>/         <model>/ (config.json + model.safetensors) + training_state.pt

``<kimg>`` is the images shown so far in thousands with three decimals (``000012.480``): one name per
image count, so every tick has its own, and the names sort in training order (older runs' integer
names, ``000012``, sort among them).

Everything is written to a temporary name and renamed (:func:`atomic_path`, the one scheme every
writer of lesion-train uses), so a run killed at any moment leaves only complete files and
snapshots behind, and ``latest_snapshot`` never sees a half-written one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from lesion_models.hub import replace_directory, torch_load_problem
from PIL import Image

OPTIONS_NAME = "training_options.json"
LOG_NAME = "log.jsonl"
STATE_NAME = "training_state.pt"
_SNAPSHOT_RE = re.compile(r"^\d{6}(\.\d{3})?$")
# What a killed writer leaves in snapshots/: a half-written ``.<name>.tmp-<pid>`` or, from
# ``replace_directory``, the ``.<name>.old-<pid>`` an interrupted replacement had moved aside.
_LEFTOVER_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stops and its last snapshot stays intact."""


class ResumeError(RuntimeError):
    """A run or snapshot to resume from is missing or unreadable."""


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` can be (or become) a folder: neither it nor any parent is a file. Called before any
    work, so a wrong ``--out`` fails at once."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"{part}: exists and is not a folder ({option} {path})")
            break
    return path


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """``path`` can be written as a file: not a folder, and its parent can be a folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; {option} takes a file name")
    check_output_folder(path.parent, option)
    return path


def create_run_dir(root: str | os.PathLike, name: str) -> Path:
    """Make ``root/<YYYYmmdd-HHMMSS>-<name>``, adding a counter if that second is taken."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = check_output_folder(root)
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt}"
        run_dir = root / f"{stamp}-{name}{suffix}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"{root}: could not create a fresh run directory")


# ---------------------------------------------------------------------------------------------
# Atomic writes: every file the package writes appears complete or not at all.


def temporary_name(path: Path) -> Path:
    """``.<name>.tmp-<pid><suffix>`` beside ``path``: hidden from listings, one per writing process,
    and ending in the file's own suffix (image writers pick the format from it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block ends without an error the file is
    flushed to disk and renamed onto ``path``, otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_image(image: Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """A PIL image or a uint8 array (H x W or H x W x 3), in the format of ``path``'s suffix."""
    with atomic_path(path) as tmp:
        (image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))).save(tmp)
    return Path(path)


def to_jsonable(options) -> dict:
    """Dataclasses (nested too) and paths become plain JSON values."""
    if dataclasses.is_dataclass(options):
        options = dataclasses.asdict(options)
    return json.loads(json.dumps(options, default=str))


def write_options(run_dir: Path, options) -> Path:
    path = Path(run_dir) / OPTIONS_NAME
    atomic_write_bytes(path, (json.dumps(to_jsonable(options), indent=2) + "\n").encode())
    return path


def read_options(run_dir: Path) -> dict:
    path = Path(run_dir) / OPTIONS_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ResumeError(f"{path}: unreadable ({error})") from None


class JsonlLog:
    """Append-only log, one JSON object per line, flushed per line so ``tail -f`` works."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: Mapping) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(to_jsonable(dict(record))) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def check_finite(losses: Mapping[str, torch.Tensor | float], step: int) -> None:
    """Stop the run, naming the step and the loss, when any loss is NaN or infinite."""
    for name, value in losses.items():
        value = float(value)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"step {step}: loss {name} is {value}; stopping (the last snapshot is intact)"
            )


# ---------------------------------------------------------------------------------------------
# RNG state, in a form torch.load(weights_only=True) accepts (tensors, ints, lists, dicts).


def capture_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping) -> None:
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Snapshots.


def kimg_name(kimg: float) -> str:
    """``000012.480``: exact to one image, fixed width, so names sort in training order."""
    return f"{kimg:010.3f}"


def snapshot_dir(run_dir: Path, kimg: float) -> Path:
    return Path(run_dir) / "snapshots" / kimg_name(kimg)


def save_snapshot(run_dir: Path, kimg: float, models: Mapping[str, object], state: Mapping) -> Path:
    """Write every model (``save_pretrained``) and the training state, then publish by rename.

    A snapshot directory therefore exists only when complete; an older one with the same name is
    replaced only after the new one is fully on disk.
    """
    final = snapshot_dir(run_dir, kimg)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, model in models.items():
        model.save_pretrained(tmp / name)
    with open(tmp / STATE_NAME, "wb") as handle:
        torch.save(dict(state), handle)
        handle.flush()
        os.fsync(handle.fileno())
    replace_directory(tmp, final)
    return final


def list_snapshots(run_dir: Path) -> list[Path]:
    """Complete snapshots, oldest first (temporaries start with a dot and are never listed)."""
    root = Path(run_dir) / "snapshots"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _SNAPSHOT_RE.match(p.name)), key=lambda p: float(p.name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_snapshots(run_dir: Path) -> list[str]:
    """Remove what killed writers left in ``snapshots/`` (see ``_LEFTOVER_RE``); a moved-aside
    snapshot whose replacement never arrived is put back instead. Entries of a live process other
    than this one are left alone. Returns the names removed or restored."""
    root = Path(run_dir) / "snapshots"
    done = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        match = _LEFTOVER_RE.match(path.name)
        pid = int(match["pid"]) if match else 0
        if not match or (pid != os.getpid() and _alive(pid)):
            continue
        final = root / match["name"]
        if match["kind"] == "old" and not final.exists() and (path / STATE_NAME).is_file():
            os.replace(path, final)
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        done.append(path.name)
    return done


def latest_snapshot(run_dir: Path) -> Path | None:
    snapshots = list_snapshots(run_dir)
    return snapshots[-1] if snapshots else None


def load_training_state(snapshot: Path, device: str | torch.device = "cpu") -> dict:
    path = Path(snapshot) / STATE_NAME
    if not path.is_file():
        raise ResumeError(f"{path}: missing")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for truncated/corrupt pickles
        raise ResumeError(f"{path}: {torch_load_problem(error)}") from None


def resume_candidates(resume: str | os.PathLike) -> tuple[Path, list[Path]]:
    """``--resume``'s run directory and the snapshots to try, newest first: every complete one of a
    run directory (after :func:`clean_snapshots`), or the one snapshot directory given."""
    path = Path(resume)
    if (path / STATE_NAME).is_file():
        return path.parent.parent, [path]
    run_dir, _ = resolve_resume(path)
    clean_snapshots(run_dir)
    return run_dir, list_snapshots(run_dir)[::-1]


def resolve_resume(resume: str | os.PathLike) -> tuple[Path, Path]:
    """``--resume`` takes a run directory (its newest snapshot) or one snapshot directory.

    Returns (run_dir, snapshot_dir)."""
    path = Path(resume)
    if (path / STATE_NAME).is_file():
        return path.parent.parent, path
    if not path.is_dir():
        raise ResumeError(f"{path}: no such run or snapshot directory")
    snapshot = latest_snapshot(path)
    if snapshot is None:
        raise ResumeError(f"{path}: has no complete snapshot to resume from")
    return path, snapshot


# ---------------------------------------------------------------------------------------------
# Models inside run directories.


def find_model(path: str | os.PathLike, prefer: tuple[str, ...] = ("G_ema", "G")) -> Path:
    """A model directory (``config.json``) as given; else the first of ``prefer`` in a snapshot, or
    in a run's newest snapshot."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    is_snapshot = (path / STATE_NAME).is_file() or any((path / name / "config.json").is_file() for name in prefer)
    snapshot = path if is_snapshot else latest_snapshot(path) if path.is_dir() else None
    for name in prefer if snapshot is not None else ():
        if (snapshot / name / "config.json").is_file():
            return snapshot / name
    raise ResumeError(f"{path}: not a model directory, snapshot or run with snapshots (with {' or '.join(prefer)})")


def run_options_of(model_dir: str | os.PathLike) -> dict:
    """The ``training_options.json`` of the run a model, snapshot or run directory lies in ({}
    outside a run)."""
    path = Path(model_dir).resolve()
    for parent in [path, *path.parents]:
        if (parent / OPTIONS_NAME).is_file():
            return read_options(parent)
    return {}


def class_names(model_dir: str | os.PathLike) -> list[str]:
    """The class names recorded by the run that trained the model, else the ISIC-2017 names."""
    from lesion_data import CLASS_NAMES

    return list(run_options_of(model_dir).get("resolved", {}).get("class_names") or CLASS_NAMES)


# ---------------------------------------------------------------------------------------------
# Image grids.


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float in [-1, 1] -> uint8 (N, C, H, W), rounding like PIL."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def from_uint8(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float in [-1, 1] on ``device``, the inverse of :func:`to_uint8`."""
    # np.array copies: rows may be read-only memmap views, which torch must not alias.
    return torch.from_numpy(np.array(images)).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def image_grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] (C = 1 or 3) into one H x W x 3 uint8 array."""
    images = to_uint8(images)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    n, c, h, w = images.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    grid = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for index in range(n):
        row, col = divmod(index, ncol)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[index]
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int | None = None) -> Path:
    return atomic_save_image(image_grid(images, ncol), path)
