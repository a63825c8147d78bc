"""Synthesis (inference) speed at 256 px: the PGGAN generator at the official widths (fmap_base
8192, fmap_max 512, latent 512) and the mask-to-image generators at their published widths, one
forward pass of a batch under ``torch.inference_mode``, measured with the shared ``_perf`` code.

    uv run python benchmarks/synthesis_speed.py [--models pggan,pix2pixhd,ours,pix2pix,spade]
        [--resolution 256] [--batch 16] [--channels-last] [--grad-mode inference|no_grad] [--iters 5]

Prints img/s, s/iter, GFLOP/iter, achieved GFLOP/s, matmul GFLOP/s (same process), MFU and peak
MB per generator (peak RSS grows over the process, so the column is a running maximum on the CPU).
This times the networks alone, not PNG writing. Figures are printed, never asserted.
"""

import sys
from pathlib import Path

import click
import torch
from lesion_models.pggan import PGGANConfig, PGGANGenerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _perf  # noqa: E402
from lesion_train.distributed import choose_device  # noqa: E402
from lesion_train.mask2image import Mask2ImageConfig, build_networks, label_input  # noqa: E402

GRAD_MODES = {"inference": torch.inference_mode, "no_grad": torch.no_grad}


def generator_and_input(model: str, resolution: int, batch: int, device) -> tuple[torch.nn.Module, tuple]:
    torch.manual_seed(0)
    if model == "pggan":
        G = PGGANGenerator(PGGANConfig(resolution=resolution, num_classes=3))
        return G, (torch.randn(batch, G.z_dim), torch.arange(batch) % 3)
    G, _ = build_networks(Mask2ImageConfig(arch=model, resolution=resolution), num_classes=3)
    if getattr(G.config, "feat_num", 0):  # a filled feature bank, as after training
        G.bank_count.fill_(G.config.feature_bank_size)
        G.feature_bank.uniform_(-1, 1)
    masks = torch.zeros(batch, 1, resolution, resolution)
    masks[..., resolution // 4 : 3 * resolution // 4, resolution // 3 : 2 * resolution // 3] = 1
    return G, (label_input(masks, torch.arange(batch) % 3, 3),)


@click.command(context_settings={"show_default": True})
@click.option("--models", default="pggan,pix2pixhd,ours,pix2pix,spade")
@click.option("--resolution", type=int, default=256)
@click.option("--batch", type=int, default=16)
@click.option("--iters", type=int, default=5, help="Timed forward passes (median) after one warm-up.")
@click.option("--channels-last", is_flag=True, help="Weights and input in channels_last memory format.")
@click.option("--grad-mode", type=click.Choice(list(GRAD_MODES)), default="inference")
@click.option("--device", default="auto")
def main(models, resolution, batch, iters, channels_last, grad_mode, device):
    dev = choose_device(device)
    matmul = _perf.matmul_gflops(dev)
    print(f"synthesis at {resolution} px, batch {batch}, {grad_mode}, channels_last {channels_last}, "
          f"{torch.get_num_threads()} threads, matmul {matmul:.1f} GFLOP/s")
    print(_perf.HEADER, flush=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for model in models.split(","):
        G, inputs = generator_and_input(model, resolution, batch, dev)
        G = G.to(dev, memory_format=fmt).eval()
        inputs = tuple(x.to(dev, memory_format=fmt) if x.ndim == 4 else x.to(dev) for x in inputs)

        def forward():
            with GRAD_MODES[grad_mode]():
                return G(*inputs)

        print(_perf.row(_perf.measure(f"{model} {resolution}px b{batch}", forward, batch, dev, iters=iters,
                                      matmul=matmul)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
