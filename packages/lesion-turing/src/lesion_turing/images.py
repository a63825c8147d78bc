"""Image intake and output: safe folder listing, uniform re-encoding, contact sheets.

Every quiz image goes through the same pipeline so that only its pixels can tell real from
synthetic: decode, apply the EXIF orientation, drop alpha and colour profile, centre-crop to a
square, resize to one size with Lanczos, optionally pass through the same JPEG round trip (so real
photographs, usually JPEGs, and synthetic PNGs carry the same compression traces), and write an
uncompressed PNG without any metadata chunk. Uncompressed PNGs of one size all have the same byte
length, so not even the response size depends on the content.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
from lesion_data.preprocess import BadInput, check_pixels, fit_pixel_limit, open_image
from lesion_data.readers import is_image_file
from PIL import Image, ImageDraw, ImageOps


class ImageError(ValueError):
    """A folder or image that cannot be used; the message names it."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below `folder`, sorted, never leaving it.

    Which files are images is lesion-data's one rule (`lesion_data.readers.is_image_file`: hidden
    files, ISIC's `*_superpixels.png` and the apps' contact sheets such as `grid.png` and
    `preview.png` are skipped); symbolic links that resolve outside the folder are skipped too, and
    symlinked directories are not followed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"{folder}: not a directory")
    root = root.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if not is_image_file(path):
                continue
            resolved = path.resolve()
            if resolved.is_relative_to(root) and resolved.is_file():
                found.append(resolved)
    return sorted(found)


def select_study(real: list[Path], synthetic: list[Path], n: int, seed: int) -> list[tuple[Path, bool]]:
    """n/2 real and n/2 synthetic files drawn at random (reproducibly from `seed`): the image set
    every rater judges. Returns (path, is_synthetic) pairs, real first (order is never shown)."""
    if n < 2 or n % 2:
        raise ImageError(f"--n must be an even number >= 2 so the quiz is balanced, got {n}")
    for name, pool in (("real", real), ("synthetic", synthetic)):
        if len(pool) < n // 2:
            raise ImageError(f"the {name} folder has {len(pool)} images, the quiz needs {n // 2}")
    rng = random.Random(seed)
    return [(p, False) for p in rng.sample(real, n // 2)] + [(p, True) for p in rng.sample(synthetic, n // 2)]


def reencode(path: Path, size: int, jpeg_quality: int) -> bytes:
    """The quiz rendition of one image: `size` x `size` RGB, uncompressed PNG, no metadata."""
    try:
        with open_image(path) as im:
            check_pixels(fit_pixel_limit(im), path)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L"):
                # 16-bit grey: Pillow's own conversion clips at 255 instead of scaling.
                im = Image.fromarray(np.rint(np.asarray(im, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            im = im.resize((size, size), Image.Resampling.LANCZOS, box=box)
    except BadInput as exc:
        raise ImageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from None
    if jpeg_quality:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=jpeg_quality, subsampling=2)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    # A fresh image from the raw pixels carries no info dict (ICC profile, EXIF, dpi, text).
    clean = Image.fromarray(np.asarray(im))
    out = io.BytesIO()
    clean.save(out, "PNG", compress_level=0)
    return out.getvalue()


def contact_sheet(pngs: list[bytes], captions: list[str], columns: int = 4, tile: int = 192) -> Image.Image:
    """A grid of images with a caption line under each (for the 'most convincing fakes' panel)."""
    if not pngs:
        return Image.new("RGB", (tile, 24), "white")
    caption_h = 22
    rows = (len(pngs) + columns - 1) // columns
    cols = min(columns, len(pngs))
    sheet = Image.new("RGB", (cols * tile, rows * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (data, caption) in enumerate(zip(pngs, captions, strict=True)):
        x, y = (i % columns) * tile, (i // columns) * (tile + caption_h)
        with Image.open(io.BytesIO(data)) as im:
            sheet.paste(im.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS), (x, y))
        draw.text((x + 4, y + tile + 5), caption, fill="black")
    return sheet
