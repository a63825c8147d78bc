"""Convert a dermoscopy dataset (or built-in phantoms) into a prepared multi-resolution store.

    uv run apps/prepare_data SOURCE OUT --resolution 256 [--margin 0.25] [--skip-bad] [--workers 2]
    uv run apps/prepare_data phantom OUT --resolution 64 --phantoms 2000 [--seed 0] [--balanced]

SOURCE is an ISIC-2017, ISIC-2018 or HAM10000 folder in the official layout, or any folder of
images (optionally one subfolder per class); the layout is detected (override with --layout).
Every bad file is reported at the end; --skip-bad writes the store without them.
"""

import pathlib
import sys

import click
from lesion_data.prepare import PrepareError, prepare_phantom_store, prepare_store
from lesion_data.preview import preview_sheet
from lesion_data.readers import SourceError
from lesion_data.store import PreparedStore, StoreError
from lesion_train import cli
from PIL import Image


@cli.command(renamed_options={"--n": "--phantoms"})
@click.argument("source")
@click.argument("out", type=click.Path(path_type=pathlib.Path))
@click.option("--resolution", "-r", type=int, default=256, show_default=True, help="Top level (power of two >= 4).")
@click.option("--margin", type=float, default=0.25, show_default=True,
              help="Context around the lesion's bounding box, as a fraction of its side, on every side.")
@click.option("--skip-bad", is_flag=True, help="Leave bad files out (listed in the manifest) instead of stopping.")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
@click.option("--layout", type=click.Choice(["isic2017", "isic2018", "ham10000", "folder"]), default=None,
              help="Force a layout instead of detecting it.")
@click.option("--split", "splits", multiple=True,
              help="ISIC layouts: read only this split (repeatable), e.g. --split Training.")
@click.option("--no-draft", is_flag=True, help="Decode JPEGs at full size (slower; default decodes at >= 2x target).")
@click.option("--phantoms", "n", type=int, default=2000, show_default=True, help="Phantoms to render (SOURCE phantom).")
@click.option("--seed", type=int, default=0, show_default=True, help="Phantom seed (SOURCE phantom).")
@click.option("--balanced", is_flag=True, help="Equal class frequencies for phantoms instead of ISIC-2017 priors.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at OUT.")
def main(source, out, resolution, margin, skip_bad, workers, layout, splits, no_draft, n, seed, balanced, overwrite):
    """Prepare SOURCE (a dataset folder, or `phantom`) as a store in OUT."""
    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} already exists; pass --overwrite to replace it")
    try:
        if source == "phantom":
            path = prepare_phantom_store(out, resolution, n, seed, balanced=balanced, workers=workers)
        else:
            path = prepare_store(source, out, resolution, margin=margin, skip_bad=skip_bad, workers=workers,
                                 draft=not no_draft, layout=layout, splits=splits or None)
    except PrepareError as e:
        for problem in e.problems:
            click.echo(f"bad: {problem}", err=True)
        hint = "; fix them or pass --skip-bad to leave them out" if e.problems and not skip_bad else ""
        raise click.ClickException(f"{e}{hint} (nothing was written)") from None
    except (SourceError, StoreError) as e:
        raise click.ClickException(str(e)) from None
    store = PreparedStore(path)
    m = store.manifest
    for problem in m.get("skipped", []):
        click.echo(f"skipped: {problem}", err=True)
    preview = path / "preview.png"
    Image.fromarray(preview_sheet(store)).save(preview)
    counts = ", ".join(f"{name} {c}" for name, c in m["counts"].items() if c)
    click.echo(f"{path}: {len(store)} images at {store.resolutions[0]}..{store.resolution} px ({counts}); "
               f"{len(m.get('skipped', []))} skipped; preview {preview}")


if __name__ == "__main__":
    sys.exit(main())
