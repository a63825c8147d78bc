"""Shared measuring for the benchmark scripts: median timings, FLOPs of one iteration, the machine's
dense matmul rate measured in the same process, MFU and peak memory, printed as one table row.

MFU here is achieved FLOP/s over the fastest fp32 GEMM rate this process reaches right now (not a data
sheet figure), so that a loaded machine lowers both and the ratio stays meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from lesion_train.distributed import peak_memory_mb
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 1,
                   iters: int = 5) -> float:
    """Median wall time of ``fn`` over ``iters`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: its hooks make ``torch.autograd.grad``
    with respect to a leaf (a gradient penalty's input) fail with "A leaf node was passed to
    _will_engine_execute_node" (torch 2.15), and totals need no per-module attribution."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as torch.utils.flop_counter counts them (matmuls and convolutions,
    forward and backward, including double backward of a gradient penalty)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops()


def matmul_gflops(device: torch.device | str = "cpu", size: int = 2048, dtype: torch.dtype = torch.float32,
                  iters: int = 5) -> float:
    """The fastest dense GEMM rate (GFLOP/s) this process reaches, the practical limit for the networks
    benchmarked: a square ``torch.mm`` and, on the CPU, a GEMM of similar size run as a channels_last 1x1
    convolution, which goes to oneDNN instead of the BLAS behind ``torch.mm``. On AMD CPUs MKL's sgemm
    reaches about half of oneDNN's GEMM rate, which the networks' convolutions do reach, so ``torch.mm``
    alone would put MFU above 100%."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    rate = 2 * size**3 / median_seconds(lambda: a @ b, device, warmup=2, iters=iters) / 1e9
    if torch.device(device).type == "cpu":
        channels = size // 2  # (16 x 16 x 16) x channels x channels: a 4096 x 1024 x 1024 GEMM at size 2048
        x = torch.randn(16, channels, 16, 16, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(channels, channels, 1, 1, dtype=dtype)
        seconds = median_seconds(lambda: torch.nn.functional.conv2d(x, w), device, warmup=2, iters=iters)
        rate = max(rate, 2 * x.numel() * channels / seconds / 1e9)
    return rate


@dataclass
class Measurement:
    name: str
    images_per_iter: int
    seconds: float
    flops: int
    matmul_gflops: float
    peak_mb: float

    @property
    def img_per_s(self) -> float:
        return self.images_per_iter / self.seconds

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9

    @property
    def mfu(self) -> float:
        return self.gflops / self.matmul_gflops

    def as_dict(self) -> dict:
        return {"name": self.name, "img_per_s": self.img_per_s, "s_per_iter": self.seconds,
                "gflop_per_iter": self.flops / 1e9, "achieved_gflops": self.gflops,
                "matmul_gflops": self.matmul_gflops, "mfu": self.mfu, "peak_mb": self.peak_mb}


HEADER = (f"{'case':<28} {'img/s':>8} {'s/iter':>8} {'GFLOP/iter':>11} {'GFLOP/s':>8} "
          f"{'matmul':>7} {'MFU':>5} {'peak MB':>8}")


def row(m: Measurement) -> str:
    return (f"{m.name:<28} {m.img_per_s:>8.3f} {m.seconds:>8.3f} {m.flops / 1e9:>11.1f} {m.gflops:>8.1f} "
            f"{m.matmul_gflops:>7.1f} {m.mfu:>5.0%} {m.peak_mb:>8.0f}")


def measure(name: str, fn: Callable[[], object], images_per_iter: int, device: torch.device | str = "cpu",
            warmup: int = 1, iters: int = 5, matmul: float | None = None) -> Measurement:
    """Time ``fn`` (median of ``iters``), count its FLOPs once, and pair it with the matmul rate
    (measured now unless given, so a batch of rows can share one measurement)."""
    seconds = median_seconds(fn, device, warmup, iters)
    flops = count_flops(fn)
    rate = matmul if matmul is not None else matmul_gflops(device)
    return Measurement(name, images_per_iter, seconds, flops, rate, peak_memory_mb(torch.device(device)))
