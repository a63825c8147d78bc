"""Train a mask-to-image GAN (label map + diagnosis -> dermoscopy image).

    uv run apps/mask2image_train                       # CPU demo: 64 px phantoms, a few minutes
    uv run apps/mask2image_train --data STORE_OR_ISIC_FOLDER --resolution 256 --arch ours
    uv run apps/mask2image_train --resume runs/<run>   # newest complete snapshot of that run
    torchrun --standalone --nproc_per_node 4 apps/mask2image_train --data ... --batch 16

--arch: ours (pix2pixHD + encoder/decoder fusion + feature encoder), pix2pixhd, pix2pix, spade.
Without --data, unset sizes fall back to the CPU demo profile (narrow networks); with --data the
published defaults apply. See docs/mask2image.md.
"""

import sys

import click
from lesion_data.store import StoreError
from lesion_metrics.losses.translation import VGGWeightsError
from lesion_models import PretrainedLoadError
from lesion_models.pix2pixhd import UPSAMPLE_MODES
from lesion_train import cli, runs
from lesion_train.mask2image import ARCHS, Mask2ImageConfig, demo_overrides, train_mask2image
from lesion_train.setup import apply_overrides, load_run_config

DEMO = apply_overrides(Mask2ImageConfig(), demo_overrides())
OPTIONS = cli.ConfigOptions(
    Mask2ImageConfig, exclude=("resume",),
    types={"arch": ARCHS, "gan_mode": ("lsgan", "vanilla", "hinge"), "upsample": UPSAMPLE_MODES,
           "vgg_weights": click.Path(exists=True, dir_okay=False)},
    defaults_from=[Mask2ImageConfig(), DEMO], varying=lambda values: f"{values[0]}; demo without --data: {values[1]}",
)


@cli.command()
@click.option("--resume", help="Run directory or snapshot directory to continue; its options are reused.")
@cli.dry_run_option
@cli.plan_options
@OPTIONS
def main(resume, dry_run, plan, options):
    """Train a mask-to-image GAN; prints the run directory and the final grid."""
    try:
        if resume:
            config = options.build(Mask2ImageConfig, load_run_config(resume, Mask2ImageConfig, {"loop.resume": resume}))
        else:
            # A plan is of the published networks, which a GPU run on real data trains.
            published = "data" in options.given or plan is not None
            config = options.build(Mask2ImageConfig, Mask2ImageConfig() if published else DEMO)
        if cli.preview(config, dry_run, plan):
            return
        result = train_mask2image(config)
    except (StoreError, runs.ResumeError, runs.NonFiniteLossError, PretrainedLoadError, VGGWeightsError, ValueError,
            TypeError) as error:
        raise click.ClickException(str(error).splitlines()[0]) from None
    if result.final_grid is None:  # a non-main torchrun rank: rank 0 reports for the run
        return
    click.echo(f"run: {result.run_dir}")
    click.echo(f"grid (label map | real | synthesized): {result.final_grid}")
    click.echo(f"snapshot: {result.final_snapshot}")


if __name__ == "__main__":
    sys.exit(main())
