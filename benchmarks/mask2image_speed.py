"""Training speed of the mask-to-image architectures: one full training step (G step + D step, as
the trainer does) on random label maps, measured with the shared ``_perf`` code.

    uv run benchmarks/mask2image_speed.py [--cases 128x1,128x4,256x4] [--archs pix2pixhd,ours]
                                          [--widths paper|demo] [--iters 5] [--threads N] [--device auto]

``paper`` widths are pix2pixHD's configuration (global generator ngf 64, 9 residual blocks,
num_D 2, n_layers_D 3, ndf 64, LSGAN + feature matching, no VGG, instance norm; ~182M generator
parameters); ``ours`` adds the encoder/decoder fusion and the feature encoder at those widths.
``demo`` uses the CPU demo widths. Each (arch, case) runs in its own process so that the peak
memory is that case's alone. Prints img/s, s/iter, GFLOP/iter, achieved GFLOP/s, the matmul
GFLOP/s of the same process, MFU and peak MB. Figures are printed, never asserted.

NVIDIA pix2pixHD's own step, for comparison, is not run by this script (it is not a dependency); its figures
on the same hardware are in docs/performance.md.
"""

import subprocess
import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _perf  # noqa: E402
from lesion_train.distributed import DistEnv, choose_device  # noqa: E402
from lesion_train.mask2image import ARCHS, Mask2ImageConfig, Mask2ImageTrainer, demo_overrides  # noqa: E402


def random_batch(batch: int, resolution: int, device) -> dict[str, torch.Tensor]:
    masks = torch.zeros(batch, 1, resolution, resolution, device=device)
    masks[..., resolution // 4 : 3 * resolution // 4, resolution // 3 : 2 * resolution // 3] = 1
    return {"images": torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1, "masks": masks,
            "labels": torch.arange(batch, device=device) % 3}


def one_case(arch: str, case: str, widths: str, iters: int, device: str, compile: bool) -> _perf.Measurement:
    resolution, batch = (int(v) for v in case.split("x"))
    torch.manual_seed(0)
    dev = choose_device(device)
    sizes = {k: demo_overrides()[k] for k in ("ngf", "ndf", "n_blocks")} if widths == "demo" else {}
    config = Mask2ImageConfig(arch=arch, resolution=resolution, batch_size=batch, compile=compile, **sizes)
    trainer = Mask2ImageTrainer(config, num_classes=3, env=DistEnv(device=dev))
    data = random_batch(batch, resolution, dev)
    return _perf.measure(f"{arch} {resolution}px b{batch}", lambda: trainer.step(data), batch, dev, iters=iters)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--cases", default="128x1,128x4,256x4", show_default=True, help="RESOLUTIONxBATCH, comma-separated")
@click.option("--archs", default="pix2pixhd,ours", show_default=True, help=f"comma-separated, of {ARCHS}")
@click.option("--widths", type=click.Choice(["paper", "demo"]), default="paper", show_default=True)
@click.option("--iters", type=int, default=5, show_default=True, help="Timed steps (median) after one warm-up.")
@click.option("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
@click.option("--device", default="auto", show_default=True)
@click.option("--compile/--no-compile", default=False, help="torch.compile G and D (as mask2image_train --compile).")
@click.option("--one", is_flag=True, hidden=True, help="Run a single case in this process (internal).")
def main(cases, archs, widths, iters, threads, device, compile, one):
    if threads:
        torch.set_num_threads(threads)
    if one:
        print(_perf.row(one_case(archs, cases, widths, iters, device, compile)), flush=True)
        return
    print(f"mask2image training step (G + D), {widths} widths, {torch.get_num_threads()} threads, compile {compile}")
    print(_perf.HEADER, flush=True)
    for case in cases.split(","):
        for arch in archs.split(","):
            command = [sys.executable, __file__, "--one", "--archs", arch, "--cases", case, "--widths", widths,
                       "--iters", str(iters), "--device", device, "--compile" if compile else "--no-compile"]
            command += ["--threads", str(threads)] if threads else []
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"{arch} {case} failed: {done.stderr.strip().splitlines()[-1]}", flush=True)
                continue
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    sys.exit(main())
