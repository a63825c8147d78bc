"""Synthesize dermoscopy images from lesion masks with a trained mask-to-image generator.

    uv run apps/mask2image_synthesize MODEL_DIR --masks DIR --class melanoma --out DIR
    uv run apps/mask2image_synthesize MODEL_DIR --masks DIR --class from-csv --csv labels.csv --out DIR
    uv run apps/mask2image_synthesize MODEL_DIR --masks DIR --class nevus --variations 4 --out DIR \
        --segmenter runs/segmenter         # + mask consistency (Dice/IoU) in DIR/mask_consistency.json
        --classifier runs/<classifier>/best  # + class fidelity (accuracy vs --class) in DIR/class_fidelity.json

MODEL_DIR: a run directory (its newest snapshot), a snapshot directory or a generator directory.
Any mask works, also one never seen in training and with any class. Images go to DIR/images/ (point
the evaluate app there), masks at model resolution to DIR/masks/, the list to DIR/synthesized.csv.
"""

import json
import sys

import click
from lesion_models import PretrainedLoadError
from lesion_train import cli
from lesion_train.mask2image import SynthesisError, class_fidelity, synthesize
from lesion_train.runs import atomic_write_bytes


@cli.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--masks", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of mask images.")
@click.option("--class", "class_name", required=True, help="A class name (nevus, melanoma, ...) or from-csv.")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False), help="Classes per mask for --class from-csv.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--variations", type=int, default=1, show_default=True, help="Images per mask (different feature/noise seeds).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resolution", type=int, help="Only for a bare generator directory outside a run.")
@click.option("--device", default="auto", show_default=True)
@click.option("--segmenter", type=click.Path(exists=True, file_okay=False),
              help="Trained UNetSegmenter dir (apps/segmenter_train): report mask consistency.")
@click.option("--classifier", type=click.Path(exists=True, file_okay=False),
              help="Trained LesionClassifier dir: report class fidelity (accuracy against --class).")
def main(model_dir, masks, class_name, csv_path, out, variations, seed, resolution, device, segmenter, classifier):
    """Write one image per mask (K with --variations) into OUT/images."""
    try:
        result = synthesize(model_dir, masks, out, class_name, csv_path, variations, seed, resolution, device)
        click.echo(f"{len(result.files)} images in {result.out / 'images'} (list: {result.out / 'synthesized.csv'})")
        if segmenter:
            from lesion_train.segmenter import mask_consistency

            report = mask_consistency(segmenter, result.images, result.masks)
            atomic_write_bytes(result.out / "mask_consistency.json", (json.dumps(report, indent=2) + "\n").encode())
            click.echo(f"mask consistency: Dice {report['dice']:.4f}, IoU {report['iou']:.4f} over {report['count']} images")
        if classifier:
            report = class_fidelity(classifier, result.images, result.labels, result.class_names)
            atomic_write_bytes(result.out / "class_fidelity.json", (json.dumps(report, indent=2) + "\n").encode())
            click.echo(f"class fidelity: accuracy {report['accuracy']:.4f} over {report['count']} images")
    except (SynthesisError, PretrainedLoadError, ValueError) as error:
        raise click.ClickException(str(error).splitlines()[0]) from None


if __name__ == "__main__":
    sys.exit(main())
