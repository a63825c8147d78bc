"""Train the small U-Net lesion segmenter used for mask consistency of mask-to-image models.

    uv run apps/segmenter_train                                  # 64 px phantoms, ~2 minutes on CPU
    uv run apps/segmenter_train --data STORE --resolution 256 --holdout-data HELD_OUT_STORE --out runs/segmenter

Writes OUT/config.json + OUT/model.safetensors and OUT/report.json (its own Dice/IoU on held-out
real images: the ceiling for mask consistency). Use it with
`apps/mask2image_synthesize ... --segmenter OUT`.
"""

import sys

import click

from lesion_data.store import StoreError
from lesion_train.segmenter import SegmenterTrainConfig, train_segmenter


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="runs/segmenter", show_default=True)
@click.option("--data", help="Prepared store or raw dataset folder; default built-in phantoms.")
@click.option("--holdout-data", help="Store of real images never trained on, for the report.")
@click.option("--phantoms", type=int, default=SegmenterTrainConfig.phantom_count, show_default=True,
              help="Phantom count when no --data.")
@click.option("--resolution", type=int, default=64, show_default=True)
@click.option("--kimg", type=float, default=SegmenterTrainConfig.total_kimg, show_default=True)
@click.option("--batch", type=int, default=SegmenterTrainConfig.batch_size, show_default=True)
@click.option("--base", type=int, default=SegmenterTrainConfig.base, show_default=True, help="U-Net base width.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, help="torch CPU threads (default 1 on phantoms, else torch's default).")
def main(out, data, holdout_data, phantoms, resolution, kimg, batch, base, seed, device, threads):
    """Train the segmenter and report its held-out Dice/IoU."""
    config = SegmenterTrainConfig(out=out, data=data, holdout_data=holdout_data, phantom_count=phantoms, resolution=resolution,
                                  total_kimg=kimg, batch_size=batch, base=base, seed=seed, device=device,
                                  threads=threads if threads or data else 1)
    try:
        report = train_segmenter(config)
    except (StoreError, ValueError) as error:
        raise click.ClickException(str(error).splitlines()[0]) from None
    click.echo(f"segmenter: {out} (Dice {report['dice']:.4f}, IoU {report['iou']:.4f} on {report['evaluated_on']})")


if __name__ == "__main__":
    sys.exit(main())
