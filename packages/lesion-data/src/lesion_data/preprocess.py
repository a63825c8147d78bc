"""Decode, validate and crop one source example to the store's top level.

Square crop centred on the lesion (the mask's bounding box when a mask exists and is not empty,
the image centre otherwise), ``margin`` times the box side added on every side, shrunk to fit the
image; then area (PIL BOX, antialiased) resampling for the image and nearest for the mask.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import warnings

import numpy as np
from PIL import Image

from .readers import list_image_files

DEFAULT_MARGIN = 0.25
# Largest image or mask decoded, in pixels: twice the largest ISIC photographs (6688x4439, 30 Mpx),
# 192 MB as RGB. A larger JPEG is decoded at a reduced DCT scale (1/2..1/8) that fits; anything else
# above it is refused with one line naming the file instead of PIL's DecompressionBombWarning and
# gigabytes per worker.
MAX_PIXELS = 64_000_000
# A mask is binary when every pixel is 0 or the maximum; up to this fraction of other values (the
# antialiased or JPEG-compressed edge of a real mask) is thresholded at half the maximum with a
# warning; more means the file is not a mask (a photograph, a preview sheet, a soft probability map).
MAX_GREY_FRACTION = 0.05
MASK_FILE_SUFFIXES = (".png", ".bmp", ".gif", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
_GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class BadInput(ValueError):
    """One source file cannot be used; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class Task:
    """What a worker needs for one record (picklable)."""

    image: pathlib.Path
    mask: pathlib.Path | None
    resolution: int
    margin: float = DEFAULT_MARGIN
    draft: bool = True


def open_image(path: pathlib.Path, what: str = "image") -> Image.Image:
    """Open lazily (header only); PIL's decompression-bomb warning is replaced by
    :func:`check_pixels`, and files PIL refuses outright (above twice its own limit) are BadInput."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} file not found") from None
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)) / 1e6:.0f} Mpx" if found else "too many pixels"
        raise BadInput(f"{path}: {what} too large ({size}; the limit is {MAX_PIXELS / 1e6:.0f} Mpx)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from None


def fit_pixel_limit(im: Image.Image) -> Image.Image:
    """Ask libjpeg for the largest DCT scale that brings a JPEG above MAX_PIXELS under it."""
    w, h = im.size
    if w * h > MAX_PIXELS and im.format == "JPEG":
        scale = next((k for k in (2, 4, 8) if math.ceil(w / k) * math.ceil(h / k) <= MAX_PIXELS), 8)
        im.draft(im.mode, (math.ceil(w / scale), math.ceil(h / scale)))
    return im


def check_pixels(im: Image.Image, path: pathlib.Path, what: str = "image", hint: str = "") -> None:
    """BadInput naming the file when decoding ``im`` at its current (possibly drafted) size would
    exceed MAX_PIXELS."""
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise BadInput(f"{path}: {what} is {w}x{h} ({w * h / 1e6:.0f} Mpx), above the "
                       f"{MAX_PIXELS / 1e6:.0f} Mpx limit; downscale it first{hint}")


def _load(im: Image.Image, path: pathlib.Path, what: str) -> None:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInput(f"{path}: unreadable or truncated {what} ({type(e).__name__}: {e})") from None


def binary_mask(im: Image.Image, path: pathlib.Path, allow_empty: bool = True) -> tuple[np.ndarray, str | None]:
    """A decoded mask image as uint8 (H, W) 0/1 and a one-line warning (or None) naming the file.

    Accepted: one channel in 0/1, 0/255 (0/65535 for 16 bit), or those with up to MAX_GREY_FRACTION
    of other values (thresholded at half the maximum, with a warning); RGB(A) or palette images
    whose channels are equal everywhere (read as grey, with a warning). Refused with BadInput:
    colour masks (channels differ), transparent pixels, more grey values than that, and (unless
    ``allow_empty``) masks without a single lesion pixel."""
    mode = im.mode
    arr = np.asarray(im.convert("RGBA") if mode in ("P", "PA") else im)
    note = None
    if arr.ndim == 3:
        colour, alpha = (arr[..., :-1], arr[..., -1]) if arr.shape[-1] in (2, 4) else (arr, None)
        if alpha is not None and (alpha < alpha.max()).any():
            raise BadInput(f"{path}: mask has transparent pixels (mode {mode}); expected one channel, "
                           "black background and white lesion")
        if (colour != colour[..., :1]).any():
            raise BadInput(f"{path}: colour mask (mode {mode}, channels differ); expected one channel, "
                           "black background and white lesion")
        arr = colour[..., 0]
        if colour.shape[-1] > 1:
            note = f"{path}: {mode} mask with equal channels, read as grey-scale"
    if arr.dtype == bool:
        mask = arr.astype(np.uint8)
    else:
        top = 1 if arr.max() <= 1 else 65535 if arr.max() > 255 else 255
        grey = float(((arr != 0) & (arr != top)).mean())
        if grey > MAX_GREY_FRACTION:
            raise BadInput(f"{path}: not a binary mask ({grey:.0%} of pixels are neither 0 nor {top}); "
                           "expected black background and white lesion")
        if grey:
            note = (f"{path}: {grey:.1%} of mask pixels are neither 0 nor {top} (antialiased or JPEG "
                    f"edges), thresholded at {(top + 1) // 2}")
        mask = (arr >= (top + 1) / 2).astype(np.uint8)
    if not allow_empty and not mask.any():
        raise BadInput(f"{path}: empty mask (no lesion pixel)")
    return mask, note


def load_mask(path: pathlib.Path, allow_empty: bool = True) -> tuple[np.ndarray, str | None]:
    """A mask file as uint8 (H, W) 0/1 and a one-line warning or None (see :func:`binary_mask`);
    BadInput naming the file when it is missing, unreadable, too large or not a mask."""
    with open_image(path, "mask") as im:
        check_pixels(im, path, "mask")
        _load(im, path, "mask")
        return binary_mask(im, path, allow_empty)


def read_mask(path: pathlib.Path, size: tuple[int, int], image_path: pathlib.Path) -> np.ndarray:
    """Binary uint8 (H, W) mask in 0/1 (see :func:`binary_mask`) of the same size as its image."""
    mask = load_mask(path)[0]
    if mask.shape != size[::-1]:
        raise BadInput(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                       f"{size[0]}x{size[1]}")
    return mask


def read_mask_folder(folder: str | pathlib.Path, resolution: int) -> tuple[list[str], np.ndarray, list[str]]:
    """Every mask of a folder (listed by ``readers.list_image_files``, so preview sheets are skipped)
    for mask-to-image synthesis: file stems, uint8 (N, R, R) 0/1 resized with nearest, and one-line
    warnings. Unlike a dataset's masks, an empty mask is an error (there is no lesion to draw)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder}: masks folder not found")
    files = list_image_files(folder, MASK_FILE_SUFFIXES)
    if not files:
        raise BadInput(f"{folder}: no mask images ({', '.join(MASK_FILE_SUFFIXES)})")
    masks, notes = [], []
    for path in files:
        mask, note = load_mask(path, allow_empty=False)
        small = np.asarray(Image.fromarray(mask).resize((resolution, resolution), Image.NEAREST))
        if not small.any():
            notes.append(f"{path}: the lesion vanishes at {resolution} px (smaller than a pixel); "
                         "the image shows skin only")
        masks.append(small)
        notes += [note] if note else []
    return [p.stem for p in files], np.stack(masks), notes


def crop_box(size: tuple[int, int], mask: np.ndarray | None, margin: float) -> tuple[float, float, float, float]:
    """Square (left, top, right, bottom) in pixel coordinates of an image of ``size`` = (W, H)."""
    w, h = size
    if mask is not None and mask.any():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        cx, cy = (left + right) / 2, (top + bottom) / 2
        side = max(right - left, bottom - top) * (1 + 2 * margin)
    else:
        cx, cy, side = w / 2, h / 2, float(min(w, h))
    side = min(max(side, 1.0), float(min(w, h)))
    # Shift (never shrink further) so the square stays inside the image.
    x0 = min(max(cx - side / 2, 0.0), w - side)
    y0 = min(max(cy - side / 2, 0.0), h - side)
    return (x0, y0, x0 + side, y0 + side)


def process(task: Task) -> tuple[np.ndarray, np.ndarray | None]:
    """Image uint8 (R, R, 3) and mask uint8 0/1 (R, R) or None; raises BadInput naming the file."""
    r = task.resolution
    with open_image(task.image, "image") as im:
        if im.mode in _GREY_MODES:
            raise BadInput(f"{task.image}: grey-scale image (mode {im.mode}), expected RGB colour")
        if im.mode in _ALPHA_MODES:
            raise BadInput(f"{task.image}: image has an alpha channel (mode {im.mode}), expected RGB")
        if im.mode != "RGB":
            raise BadInput(f"{task.image}: unsupported image mode {im.mode}, expected RGB")
        size = im.size
        mask = read_mask(task.mask, size, task.image) if task.mask is not None else None
        box = crop_box(size, mask, task.margin)
        side = box[2] - box[0]
        if task.draft and im.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the crop keeps >= 2R px: most of the
            # decoding cost goes away; the box filter below still averages >= 2x2 decoded pixels
            # (mean absolute difference to a full decode 0.12/255 on the ISIC sample at 64 px).
            im.draft("RGB", (math.ceil(size[0] * 2 * r / side), math.ceil(size[1] * 2 * r / side)))
        check_pixels(im, task.image, "image", " (a JPEG is decoded at reduced scale unless --no-draft)"
                     if im.format == "JPEG" and not task.draft else "")
        _load(im, task.image, "image")
        sx, sy = im.size[0] / size[0], im.size[1] / size[1]
        scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        image = np.asarray(im.resize((r, r), Image.BOX, box=scaled))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask).resize((r, r), Image.NEAREST, box=box))
    return image, mask


def process_safe(args: tuple[int, Task]) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
    """Pool entry point: never raises for bad input, returns the one-line message instead."""
    index, task = args
    try:
        image, mask = process(task)
        return index, image, mask, None
    except BadInput as e:
        return index, None, None, str(e)
    except Exception as e:  # an unexpected decoder failure must still name the file
        return index, None, None, f"{task.image}: {type(e).__name__}: {e}"


__all__ = ["process", "process_safe", "crop_box", "read_mask", "load_mask", "read_mask_folder", "binary_mask", "open_image",
           "check_pixels", "fit_pixel_limit", "Task", "BadInput", "DEFAULT_MARGIN", "MAX_PIXELS"]
