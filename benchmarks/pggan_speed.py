"""PGGAN training speed and peak memory at 32, 64 and 128 px for one fixed config.

    uv run benchmarks/pggan_speed.py                       # CPU here; CUDA when present
    uv run benchmarks/pggan_speed.py --fmap-base 8192 --fmap-max 512 --batch 16 --amp bf16   # GPU, full width

Times the real PGGAN step (D step with WGAN-GP and drift, G step, EMA) at the final stage of each
resolution on random images; prints a table, asserts nothing. On the CPU the process's peak RSS
is reported (it only grows), on CUDA the peak allocated memory per resolution.
"""

import dataclasses
import time

import click
import torch
from lesion_train.distributed import DistEnv, choose_device, peak_memory_mb
from lesion_train.gan_loop import configure_threads
from lesion_train.pggan import PGGANRecipe, preset


@click.command(context_settings={"show_default": True})
@click.option("--resolutions", default="32,64,128")
@click.option("--fmap-base", type=int, default=1024)
@click.option("--fmap-max", type=int, default=128)
@click.option("--batch", type=int, default=16)
@click.option("--steps", type=int, default=3, help="Timed steps per resolution (after one warm-up step).")
@click.option("--device", default="auto")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off")
@click.option("--cpu-threads", type=int, default=0, help="0 = auto (idle cores).")
def main(resolutions, fmap_base, fmap_max, batch, steps, device, amp, cpu_threads):
    env = DistEnv(device=choose_device(device))
    threads = configure_threads(cpu_threads, env)
    print(f"device {env.device}, threads {threads}, fmap_base {fmap_base}, fmap_max {fmap_max}, batch {batch}, amp {amp}")
    print(f"{'res':>5} {'batch':>6} {'ms/step':>9} {'img/s':>8} {'peak MB':>9}")
    for res in (int(r) for r in resolutions.split(",")):
        config = preset("cpu", resolution=res, fmap_base=fmap_base, fmap_max=fmap_max, z_dim=min(fmap_base, fmap_max),
                        **{"loop.amp": amp})
        torch.manual_seed(0)
        recipe = PGGANRecipe(config, 0, env)
        phase = dataclasses.replace(recipe.phase(10**9), batch_size=batch)  # the last stage, alpha 1
        recipe.enter_phase(phase)
        images = torch.rand(batch, 3, res, res, device=env.device) * 2 - 1
        recipe.train_step({"images": images}, phase)
        if env.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(env.device)
        start = time.perf_counter()
        for _ in range(steps):
            recipe.train_step({"images": images}, phase)
        if env.device.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / steps
        print(f"{res:>5} {batch:>6} {per_step * 1000:>9.0f} {batch / per_step:>8.1f} {peak_memory_mb(env.device):>9.0f}")


if __name__ == "__main__":
    main()
