"""Ours vs pix2pixHD vs pix2pix vs SPADE (mask to image) on the same training split, budget, seed
and widths, judged on the masks of a held-out split:
`uv run apps/compare_translation [--data STORE_OR_FOLDER] [--resolution 32] [--kimg 3] [--out runs/compare_translation]`.
Writes OUT/table.md, OUT/results.json, OUT/comparison.png (mask | real | one column per
architecture) and OUT/curves.png (every metric against kimg at --checkpoints); the splits, the
segmenter, the classifier, the training runs and OUT/evaluations.jsonl are reused by a re-run.
Without arguments: built-in phantoms on a budget a CPU trains in minutes. See docs/mask2image.md."""

from pathlib import Path

import click
from lesion_data.store import StoreError
from lesion_metrics import MetricUnavailable, NotEnoughImages, list_metrics
from lesion_metrics.inception import WeightsError
from lesion_models import PretrainedLoadError
from lesion_train import cli
from lesion_train.compare import summary
from lesion_train.compare_translation import ARCHS, TranslationCompareConfig, compare_translation, train_config
from lesion_train.runs import NonFiniteLossError, ResumeError


@cli.command()
@cli.set_option("spade.lr_d=0.0002 or ours.feat_num=0, on top of the shared options")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@cli.dry_run_option
@cli.ConfigOptions(TranslationCompareConfig, exclude=("progress",),
                   types={"data": click.Path(exists=True), "n": click.IntRange(min=2)},
                   help={"metrics": f"Comma-separated subset of: {', '.join(list_metrics())}.",
                         "archs": f"Comma-separated subset of: {', '.join(ARCHS)}."})
def main(settings, quiet, dry_run, options):
    try:
        config = options.build(TranslationCompareConfig, overrides=settings, progress=not quiet)
        if dry_run:
            train_store = str(Path(config.out) / "data" / "<split>" / "train")
            cli.print_config({"compare": config,
                              "runs": {arch: train_config(config, arch, train_store) for arch in config.archs}})
            return
        document = compare_translation(config)
    except (StoreError, ResumeError, NonFiniteLossError, NotEnoughImages, MetricUnavailable, WeightsError,
            PretrainedLoadError, ValueError) as error:
        raise click.ClickException(str(error).splitlines()[0]) from None
    click.echo(summary(document))


if __name__ == "__main__":
    main()
