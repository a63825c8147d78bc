"""Training speed and peak memory of the mask-to-image architectures on this machine.

    uv run benchmarks/mask2image_speed.py [--resolutions 128 256] [--archs ours pix2pixhd pix2pix spade]
                                          [--widths paper|demo] [--batch 1] [--steps 2] [--device auto]

Each (arch, resolution) runs in its own process (so the peak resident memory is that case's
alone): build the networks and trainer, one warm-up step on a random batch of label maps, then
``--steps`` timed full training steps (G step + D step, as the trainer does). Prints img/s, s/step,
parameter counts and the peak memory (RSS on the CPU, max allocated on CUDA). ``paper`` widths are
the published defaults (pix2pixHD ngf 64 / 9 blocks ~182M parameters); ``demo`` those of the CPU
demo run. Figures are printed, never asserted.
"""

import json
import subprocess
import sys
import time

import click
import torch

from lesion_train.distributed import DistEnv, choose_device, peak_memory_mb
from lesion_train.mask2image import Mask2ImageConfig, Mask2ImageTrainer, demo_overrides


def one_case(arch: str, resolution: int, widths: str, batch: int, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    dev = choose_device(device)
    sizes = {k: demo_overrides()[k] for k in ("ngf", "ndf", "n_blocks")} if widths == "demo" else {}
    config = Mask2ImageConfig(arch=arch, resolution=resolution, batch_size=batch, **sizes)
    trainer = Mask2ImageTrainer(config, num_classes=3, env=DistEnv(device=dev))
    masks = torch.zeros(batch, 1, resolution, resolution, device=dev)
    masks[..., resolution // 4 : 3 * resolution // 4, resolution // 3 : 2 * resolution // 3] = 1
    batch_data = {"images": torch.rand(batch, 3, resolution, resolution, device=dev) * 2 - 1, "masks": masks,
                  "labels": torch.arange(batch, device=dev) % 3}
    trainer.step(batch_data)  # warm-up (allocator, kernels)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch_data)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"arch": arch, "resolution": resolution, "widths": widths, "batch": batch,
            "G_params_M": round(sum(p.numel() for p in trainer.G.parameters()) / 1e6, 1),
            "D_params_M": round(sum(p.numel() for p in trainer.D.parameters()) / 1e6, 1),
            "s_per_step": round(elapsed / steps, 2), "img_per_s": round(batch * steps / elapsed, 3),
            "peak_mem_mb": round(peak_memory_mb(dev)), "threads": torch.get_num_threads()}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--resolutions", type=int, multiple=True, default=(128, 256), show_default=True)
@click.option("--archs", multiple=True, default=("ours", "pix2pixhd", "pix2pix", "spade"), show_default=True)
@click.option("--widths", type=click.Choice(["paper", "demo"]), default="paper", show_default=True)
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--steps", type=int, default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--one", is_flag=True, hidden=True, help="Run a single case in this process (internal).")
def main(resolutions, archs, widths, batch, steps, device, one):
    if one:
        print(json.dumps(one_case(archs[0], resolutions[0], widths, batch, steps, device)))
        return
    print(f"{'arch':10s} {'res':>5s} {'G M':>6s} {'D M':>5s} {'s/step':>7s} {'img/s':>7s} {'peak MB':>8s}  ({widths} widths, batch {batch})")
    for resolution in resolutions:
        for arch in archs:
            done = subprocess.run([sys.executable, __file__, "--one", "--archs", arch, "--resolutions", str(resolution),
                                   "--widths", widths, "--batch", str(batch), "--steps", str(steps), "--device", device],
                                  capture_output=True, text=True)
            if done.returncode:
                print(f"{arch:10s} {resolution:5d} failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{arch:10s} {resolution:5d} {r['G_params_M']:6.1f} {r['D_params_M']:5.1f} {r['s_per_step']:7.2f} "
                  f"{r['img_per_s']:7.3f} {r['peak_mem_mb']:8d}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
