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
from lesion_models import PretrainedLoadError
from lesion_train import runs
from lesion_train.mask2image import ARCHS, Mask2ImageConfig, demo_overrides, train_mask2image

# click option name -> config field; None values mean "not given".
FIELDS = {
    "data": "data", "resolution": "resolution", "arch": "arch", "kimg": "total_kimg", "batch": "batch_size",
    "ngf": "ngf", "ndf": "ndf", "n_blocks": "n_blocks", "num_d": "num_d", "feat_num": "feat_num",
    "local_enhancers": "n_local_enhancers", "init_global": "init_global", "fix_global_kimg": "fix_global_kimg",
    "gan_mode": "gan_mode", "vgg_weights": "vgg_weights", "lr_g": "lr_g", "lr_d": "lr_d",
    "tick_kimg": "tick_kimg", "snapshot_ticks": "snapshot_ticks", "seed": "seed", "device": "device",
    "amp": "amp", "threads": "threads", "run_root": "run_root", "name": "name", "phantoms": "phantom_count",
    "compile": "compile", "upsample": "upsample",
}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", help="Prepared store or raw dataset folder (ISIC-2017 ...). Default: built-in phantoms.")
@click.option("--resolution", type=int, help="Training resolution (256|512|1024; demo 64).")
@click.option("--arch", type=click.Choice(ARCHS), help="Architecture (default ours).")
@click.option("--kimg", type=float, help="Training length in thousands of images.")
@click.option("--batch", type=int, help="Global batch size.")
@click.option("--ngf", type=int, help="Generator width (pix2pixHD global ngf / SPADE nf).")
@click.option("--ndf", type=int, help="Discriminator width.")
@click.option("--n-blocks", type=int, help="pix2pixHD residual blocks (9).")
@click.option("--num-d", type=int, help="Discriminator scales (2; 3 at 1024).")
@click.option("--feat-num", type=int, help="pix2pixHD instance feature channels (ours 3, pix2pixhd 0).")
@click.option("--local-enhancers", type=int, help="pix2pixHD local enhancers (each doubles the resolution).")
@click.option("--upsample", type=click.Choice(["transpose", "resize"]),
              help="pix2pixHD decoder upsampling: transposed conv (pix2pixhd default) or resize-conv (ours default).")
@click.option("--init-global", help="Trained global generator dir (G/ of a snapshot) to start the enhancer from.")
@click.option("--fix-global-kimg", type=float, help="Train only the local enhancer this long first.")
@click.option("--gan-mode", type=click.Choice(["lsgan", "vanilla", "hinge"]), help="Override the arch's GAN loss.")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False), help="Local VGG19 weights: enables the perceptual loss.")
@click.option("--lr-g", type=float)
@click.option("--lr-d", type=float)
@click.option("--tick-kimg", type=float, help="kimg per tick (log line + grid).")
@click.option("--snapshot-ticks", type=int, help="Ticks per snapshot.")
@click.option("--phantoms", type=int, help="Phantom count when no --data.")
@click.option("--seed", type=int)
@click.option("--device", help="auto | cpu | cuda | cuda:N")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]))
@click.option("--threads", type=int, help="torch CPU threads (demo default 1; else torch's default).")
@click.option("--compile/--no-compile", default=None, help="torch.compile G and D (for CUDA; the first step compiles).")
@click.option("--run-root", help="Parent of run directories (runs).")
@click.option("--name", help="Run name suffix.")
@click.option("--resume", help="Run directory or snapshot directory to continue.")
def main(resume, **options):
    """Train a mask-to-image GAN; prints the run directory and the final grid."""
    given = {FIELDS[k]: v for k, v in options.items() if v is not None}
    try:
        if resume:
            run_dir, _ = runs.resolve_resume(resume)
            saved = runs.read_options(run_dir)
            saved.pop("resolved", None)
            if saved.get("arch") in ("ours", "pix2pixhd"):  # runs from before the option: transposed convs
                saved.setdefault("upsample", "transpose")
            config = Mask2ImageConfig(**{**saved, **given, "resume": resume})
        else:
            base = {} if "data" in given else demo_overrides()
            config = Mask2ImageConfig(**{**base, **given})
        result = train_mask2image(config)
    except (StoreError, runs.ResumeError, runs.NonFiniteLossError, PretrainedLoadError, ValueError, TypeError) as error:
        raise click.ClickException(str(error).splitlines()[0]) from None
    if result.final_grid is None:  # a non-main torchrun rank: rank 0 reports for the run
        return
    click.echo(f"run: {result.run_dir}")
    click.echo(f"grid (label map | real | synthesized): {result.final_grid}")
    click.echo(f"snapshot: {result.final_snapshot}")


if __name__ == "__main__":
    sys.exit(main())
