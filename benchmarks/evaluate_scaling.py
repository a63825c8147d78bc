"""How cost grows with the number of images: prepare time and evaluate time per metric against N.

    uv run python benchmarks/evaluate_scaling.py [--n 256,512,1024] [--res 64]
        [--metrics fid,kid,swd,msssim,pr] [--source-res 256]

For each N it writes N phantom images (lesion_data.phantom) as quality-95 JPEGs of ``--source-res`` px
and times ``prepare_store`` (decode, crop, resize, all levels; all cores) into a store at ``--res``;
then evaluates N real (the store) against N other phantoms (another seed) and times:
  features : Inception pool3 features of both sides (what fid, kid and pr share; computed once)
  fid, kid, pr : each metric given those features
  swd, msssim : each metric from the images (they need no Inception features)
All on this process's torch threads, CPU. Figures are printed, never asserted. The Inception part
is ~2 x N / (img/s of benchmarks/metrics_speed.py), so keep each run short by
splitting the N list over several runs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch
from lesion_data.phantom import generate_phantoms
from lesion_data.prepare import prepare_store
from lesion_data.store import PreparedStore
from lesion_metrics import ImageSource, MetricOptions, calc_metric
from PIL import Image

FEATURE_METRICS = ("fid", "kid", "pr")


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def one_n(n: int, res: int, source_res: int, metrics: list[str], tmp: pathlib.Path) -> dict[str, float]:
    folder = tmp / f"jpeg{n}"
    folder.mkdir()
    for i, image in enumerate(generate_phantoms(n, source_res, seed=0)[0]):
        Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=95)
    row: dict[str, float] = {}
    row["prepare"], store = _timed(lambda: prepare_store(folder, tmp / f"store{n}", res, layout="folder", progress=False))
    real = torch.from_numpy(np.ascontiguousarray(PreparedStore(store).images(res).transpose(0, 3, 1, 2)))
    fake = torch.from_numpy(np.ascontiguousarray(generate_phantoms(n, res, seed=1)[0].transpose(0, 3, 1, 2)))
    opts = MetricOptions(ImageSource.from_array(real, "real", 64), ImageSource.from_array(fake, "fake", 64),
                         cache_dir=str(tmp / "cache"), progress=False)
    if any(m in FEATURE_METRICS for m in metrics):
        row["features"], _ = _timed(lambda: (opts.features("real"), opts.features("fake")))
    for name in metrics:
        record = calc_metric(name, opts)
        row[name] = record["total_time"] if record["results"] else float("nan")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="256,512,1024", help="comma-separated image counts")
    parser.add_argument("--res", type=int, default=64, help="store resolution the metrics run at")
    parser.add_argument("--source-res", type=int, default=256, help="size of the JPEGs prepare reads")
    parser.add_argument("--metrics", default="fid,kid,swd,msssim,pr")
    args = parser.parse_args()
    metrics = args.metrics.split(",")
    columns = ["prepare"] + (["features"] if any(m in FEATURE_METRICS for m in metrics) else []) + metrics
    print(f"torch threads: {torch.get_num_threads()}; store {args.res} px from {args.source_res} px JPEGs; seconds")
    print(f"{'N':>6} " + " ".join(f"{c:>9}" for c in columns), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.n.split(",")):
            row = one_n(n, args.res, args.source_res, metrics, pathlib.Path(tmp))
            print(f"{n:>6} " + " ".join(f"{row[c]:>9.2f}" for c in columns), flush=True)


if __name__ == "__main__":
    sys.exit(main())
