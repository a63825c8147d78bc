"""Make many plausible lesion masks from real ones (random rotation, scaling, shift, elastic warp).

    uv run apps/mask_deform MASK_OR_FOLDER --n 8 --out DIR [--seed 0] [--elastic 0.04] [--scale 0.8 1.2]

Writes DIR/<mask>__d<k>.png (0/255, the input's size) and a contact sheet DIR/preview.png (which no
folder reader takes for a mask or image); feed DIR to `apps/mask2image_synthesize --masks DIR` to
turn one real mask into many synthetic lesions.
"""

import pathlib
import sys

import click
import numpy as np
import torch
from lesion_data.mask_deform import deform_masks
from lesion_data.preprocess import MASK_FILE_SUFFIXES, BadInput, load_mask
from lesion_data.readers import list_image_files
from lesion_train import cli
from lesion_train.runs import atomic_save_image, save_image_grid
from PIL import Image


@cli.command()
@click.argument("source", type=click.Path(exists=True, path_type=pathlib.Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option("--n", "n", type=int, default=8, show_default=True, help="Variants per input mask.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rotation", type=float, default=180.0, show_default=True, help="Max rotation (degrees).")
@click.option("--scale", type=float, nargs=2, default=(0.8, 1.2), show_default=True, help="Zoom range.")
@click.option("--shift", type=float, default=0.05, show_default=True, help="Max shift (fraction of the side).")
@click.option("--elastic", type=float, default=0.04, show_default=True, help="Max elastic displacement (fraction).")
def main(source, out, n, seed, rotation, scale, shift, elastic):
    """Write N deformed variants of every mask in SOURCE to OUT."""
    files = list_image_files(source, MASK_FILE_SUFFIXES) if source.is_dir() else [source]
    if not files:
        raise click.ClickException(f"{source}: no mask images")
    masks = []
    for path in files:  # every mask is checked before anything is written
        try:
            mask, warning = load_mask(path, allow_empty=False)
        except BadInput as error:
            raise click.ClickException(str(error)) from None
        if warning:
            click.echo(f"warning: {warning}", err=True)
        masks.append(mask)
    out.mkdir(parents=True, exist_ok=True)
    preview = []
    for index, (path, mask) in enumerate(zip(files, masks)):
        try:
            variants = deform_masks(mask, n, seed=seed * 100_003 + index, rotation=rotation, scale=scale,
                                    shift=shift, elastic=elastic)
        except ValueError as error:
            raise click.ClickException(f"{path}: {error}") from None
        for k, variant in enumerate(variants):
            atomic_save_image(variant * 255, out / f"{path.stem}__d{k}.png")
        if len(preview) < 8:
            small = [np.asarray(Image.fromarray(m * 255).resize((64, 64))) for m in (mask.astype(np.uint8), *variants)]
            preview.append(torch.from_numpy(np.stack(small)).float().div(127.5).sub(1).unsqueeze(1))
    save_image_grid(torch.cat(preview), out / "preview.png", ncol=n + 1)
    click.echo(f"{len(files) * n} masks in {out} (preview: first column the input) {out / 'preview.png'}")


if __name__ == "__main__":
    sys.exit(main())
