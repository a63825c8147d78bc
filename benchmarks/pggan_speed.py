"""PGGAN training speed with the official networks, per resolution, through benchmarks/_perf.py.

    uv run python benchmarks/pggan_speed.py                        # 8..128 px, CPU
    uv run python benchmarks/pggan_speed.py --resolutions 256 --iters 1
    uv run python benchmarks/pggan_speed.py --device cuda --resolutions 4,8,16,32,64,128,256

One iteration is the real PGGAN step of ``lesion_train.pggan.PGGANRecipe`` with the official
``gpu`` preset (fmap_base 8192, fmap_max 512, latent 512, WGAN-GP lambda 10 + drift 0.001, Adam,
G EMA 0.999): a D step on reals, fakes and the gradient penalty's blend, then a G step, then the
EMA update, at the last stage of each resolution (alpha 1), on random images, batch 16 by default.
Prints the shared table row (img/s, FLOPs of one iteration, achieved GFLOP/s, matmul GFLOP/s,
MFU, peak MB) and then s/kimg per resolution; asserts nothing.

The FLOP-counting iteration doubles as the warm-up. On the CPU, peak memory is the process's peak
RSS (it only grows, so resolutions run in increasing order); on CUDA the peak allocated memory of
that resolution. The CPU benchmark uses every core; run it with nothing else running.
"""

import dataclasses
import functools
import os
import sys
from pathlib import Path

import click
import torch
from lesion_train.distributed import DistEnv, choose_device, peak_memory_mb
from lesion_train.pggan import PGGANRecipe, preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _perf  # noqa: E402


@click.command(context_settings={"show_default": True})
@click.option("--resolutions", default="8,16,32,64,128")
@click.option("--fmap-base", type=int, default=8192)
@click.option("--fmap-max", type=int, default=512)
@click.option("--z-dim", type=int, default=512)
@click.option("--batch", type=int, default=16)
@click.option("--iters", type=int, default=5, help="Timed iterations per resolution (median).")
@click.option("--device", default="auto")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off")
@click.option("--channels-last/--no-channels-last", default=True)
@click.option("--fused-adam/--no-fused-adam", default=True)
@click.option("--compile/--no-compile", default=False, help="torch.compile G (as pggan_train --compile).")
@click.option("--cpu-threads", type=int, default=0, help="0 = every core.")
def main(resolutions, fmap_base, fmap_max, z_dim, batch, iters, device, amp, channels_last, fused_adam, compile,
         cpu_threads):
    env = DistEnv(device=choose_device(device))
    if env.device.type == "cpu":
        torch.set_num_threads(cpu_threads or os.cpu_count() or 1)
    matmul = _perf.matmul_gflops(env.device)
    print(f"device {env.device}, threads {torch.get_num_threads()}, fmap_base {fmap_base}, fmap_max {fmap_max}, "
          f"z_dim {z_dim}, batch {batch}, amp {amp}, channels_last {channels_last}, fused_adam {fused_adam}, "
          f"compile {compile}, iters {iters}, matmul {matmul:.1f} GFLOP/s")
    print(_perf.HEADER, flush=True)
    rows = []
    for res in (int(r) for r in resolutions.split(",")):
        config = preset("gpu", resolution=res, fmap_base=fmap_base, fmap_max=fmap_max, z_dim=z_dim,
                        channels_last=channels_last, fused_adam=fused_adam, compile=compile, **{"loop.amp": amp})
        torch.manual_seed(0)
        recipe = PGGANRecipe(config, 0, env)
        phase = dataclasses.replace(recipe.phase(10**9), batch_size=batch)  # the last stage, alpha 1
        recipe.enter_phase(phase)
        images = torch.rand(batch, 3, res, res, device=env.device) * 2 - 1
        step = functools.partial(recipe.train_step, {"images": images}, phase)
        if compile:
            step()  # compiles G's graphs, outside the FLOP count and the timing
        if env.device.type == "cuda":
            step()  # CUDA's first call also initialises kernels; keep it out of the peak
            torch.cuda.reset_peak_memory_stats(env.device)
        flops = _perf.count_flops(step)  # also the warm-up
        seconds = _perf.median_seconds(step, env.device, warmup=0, iters=iters)
        m = _perf.Measurement(f"pggan {res}px b{batch}", batch, seconds, flops, matmul, peak_memory_mb(env.device))
        rows.append((res, m))
        print(_perf.row(m), flush=True)
        del recipe, step  # frees the networks before the next resolution builds its own
    print(f"\n{'res':>5} {'s/kimg':>9} {'peak MB':>8}")
    for res, m in rows:
        print(f"{res:>5} {1000 / m.img_per_s:>9.0f} {m.peak_mb:>8.0f}")


if __name__ == "__main__":
    main()
