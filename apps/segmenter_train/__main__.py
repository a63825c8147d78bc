"""Train the small U-Net lesion segmenter used for mask consistency of mask-to-image models.

    uv run apps/segmenter_train                                  # 64 px phantoms, ~2 minutes on CPU
    uv run apps/segmenter_train --data STORE --resolution 256 --holdout-data HELD_OUT_STORE --out runs/segmenter

Writes OUT/config.json + OUT/model.safetensors, OUT/report.json (its own Dice/IoU on held-out
real images: the ceiling for mask consistency) and OUT/log.jsonl. Use it with
`apps/mask2image_synthesize ... --segmenter OUT`.
"""

import sys

import click
from lesion_data.store import StoreError
from lesion_train import cli
from lesion_train.segmenter import SegmenterTrainConfig, train_segmenter
from lesion_train.setup import apply_overrides


@cli.command()
@cli.dry_run_option
@cli.ConfigOptions(SegmenterTrainConfig)
def main(dry_run, options):
    """Train the segmenter and report its held-out Dice/IoU."""
    try:
        config = options.build(SegmenterTrainConfig)
        if config.threads is None and config.data is None:
            config = apply_overrides(config, {"threads": 1})  # tiny phantom convolutions: one thread is fastest
        if dry_run:
            cli.print_config(config)
            return
        report = train_segmenter(config)
    except (StoreError, ValueError) as error:
        raise click.ClickException(str(error).splitlines()[0]) from None
    click.echo(f"segmenter: {config.out} (Dice {report['dice']:.4f}, IoU {report['iou']:.4f} on {report['evaluated_on']})")


if __name__ == "__main__":
    sys.exit(main())
