"""Images/s for training batches read from a prepared store versus decoding JPEGs with PIL.

    uv run benchmarks/data_throughput.py [--seconds 3] [--batch 32]

For each resolution (64, 256, 1024) it writes N phantom images once as quality-95 JPEGs of exactly
that size and as a prepared store, then times random batches:
  store read : StoreBatches' host read: sorted indices, one gather from the memmap into its reused
               uint8 NHWC buffer (on CPU), what is sent to the device
  jpeg read  : PIL open + decode of every image of every batch into the same uint8 batch (already
               resized JPEGs, so the cheapest JPEG pipeline; full-size ISIC originals decode far slower)
  ratio      : store read / jpeg read
  batches    : StoreBatches to float NCHW [-1, 1] on the CPU, without and with flips/rotations (on a
               GPU the conversion and augmentation run on the device instead)
One process, one torch thread, warm page cache. Figures are printed, never asserted.
"""

import pathlib
import sys
import tempfile
import time

import click
import numpy as np
import torch
from lesion_data.loader import StoreBatches
from lesion_data.phantom import generate_phantoms
from lesion_data.store import PreparedStore, write_store
from PIL import Image

SIZES = {64: 1024, 256: 128, 1024: 32}


def _images(n: int, size: int) -> np.ndarray:
    # Phantoms above 256 px are upscaled 256 px ones: content matters little for decode speed.
    base = min(size, 256)
    images = generate_phantoms(n, base, seed=0)[0]
    if base == size:
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images])


def _rate(step, batch: int, seconds: float) -> float:
    step()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - start)


@click.command()
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Timing window per measurement.")
@click.option("--batch", type=int, default=32, show_default=True)
def main(seconds: float, batch: int) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'res':>5} {'n':>5} {'store read':>11} {'jpeg read':>10} {'ratio':>7} {'batches':>8} {'+aug':>6}   (img/s)")
    with tempfile.TemporaryDirectory() as tmp:
        for size, n in SIZES.items():
            images = _images(n, size)
            folder = pathlib.Path(tmp) / f"jpeg{size}"
            folder.mkdir()
            paths = []
            for i, im in enumerate(images):
                paths.append(folder / f"{i:05d}.jpg")
                Image.fromarray(im).save(paths[-1], quality=95)
            store = PreparedStore(write_store(pathlib.Path(tmp) / f"store{size}", images, None, np.zeros(n, np.int64),
                                              ("x",), source={"layout": "benchmark"}, preprocessing={}))
            plain = StoreBatches(store, size, batch, augment=False)
            augmented = StoreBatches(store, size, batch, augment=True)

            reader = StoreBatches(store, size, batch, augment=False)

            def jpeg_step():
                idx = rng.integers(0, n, batch)
                torch.from_numpy(np.stack([np.asarray(Image.open(paths[i]).convert("RGB")) for i in idx]))

            store_rate = _rate(reader._read, batch, seconds)
            jpeg_rate = _rate(jpeg_step, batch, seconds)
            plain_rate = _rate(lambda: next(plain), batch, seconds)
            aug_rate = _rate(lambda: next(augmented), batch, seconds)
            print(f"{size:>5} {n:>5} {store_rate:>11.0f} {jpeg_rate:>10.0f} {store_rate / jpeg_rate:>6.1f}x "
                  f"{plain_rate:>8.0f} {aug_rate:>6.0f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
