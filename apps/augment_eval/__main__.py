"""Does synthesis help? Train classifiers on real and on real + synthetic images, test on real.

    uv run apps/augment_eval --data STORE --synthetic DIR_OR_MODEL --ratios 0,0.5,1,2 \
        --classifiers resnet18,densenet121 --seeds 3 [--balance] [--real-train 300]
    uv run apps/augment_eval                         # built-in phantoms, oracle synthetic phantoms
    uv run apps/augment_eval --resume runs/<stamp>-augment_eval

--synthetic takes a prepared store, a folder with one subfolder per class, a CSV (image,label),
a class-conditional generator (model, snapshot or run directory: G(z, labels), e.g. a
conditional PGGAN) or phantom:SEED. Results: table.md, auc_vs_ratio.png in the experiment folder.
"""


import click
from lesion_data.store import StoreError
from lesion_train import cli
from lesion_train.augment_eval import AugmentEvalConfig, export_training_split, run_experiment
from lesion_train.runs import ResumeError

# Every trial sets the classifier's architecture, seed, resolution and classes itself.
OPTIONS = cli.ConfigOptions(AugmentEvalConfig, exclude=("train.arch", "train.seed", "train.class_names"))


@cli.command()
@click.option("--resume", default=None, help="Experiment folder to finish (its options are reused).")
@click.option("--export-train", default=None, metavar="DIR",
              help="Write the real training split as a prepared store at DIR (to train generators on) and exit.")
@cli.dry_run_option
@OPTIONS
def main(resume, export_train, dry_run, options):
    """Downstream classifier AUC with and without synthetic training images."""
    try:
        config = options.build(AugmentEvalConfig)
        if dry_run:
            cli.print_config(config)
            return
        if export_train:
            store = export_training_split(config, export_train)
            click.echo(f"{store.path}: the {len(store)} real training images of this split; train generators "
                       f"on it (--data {store.path}) and pass the same split options here")
            return
        run_dir = run_experiment(config, resume=resume)
    except (ValueError, FileNotFoundError, StoreError, ResumeError) as error:
        raise click.ClickException(str(error)) from None
    if run_dir is None:  # a non-main torchrun rank: rank 0 reports for the experiment
        return
    click.echo((run_dir / "table.md").read_text())
    click.echo(f"experiment: {run_dir}  (table.md, auc_vs_ratio.png, delta_vs_fid.png, grids/)")


if __name__ == "__main__":
    main()
