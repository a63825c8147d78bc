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
from lesion_train.augment_eval import AugmentEvalConfig, run_experiment
from lesion_train.classifier import ClassifierTrainConfig
from lesion_train.runs import ResumeError


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(t) for t in text.split(",") if t.strip()) if text.strip() else ()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", default=None, help="Prepared store of real images (default: built-in phantoms).")
@click.option("--synthetic", default="phantom:1", show_default=True, help="Synthetic source (see above).")
@click.option("--ratios", default="0,0.5,1,2", show_default=True, help="Synthetic images per real training image.")
@click.option("--balance", is_flag=True, help="Also run a condition that uses synthesis only to balance the classes.")
@click.option("--classifiers", default="resnet18", show_default=True,
              help="Comma-separated: resnet18, resnet50, densenet121, efficientnet_b0.")
@click.option("--seeds", type=int, default=3, show_default=True)
@click.option("--resolution", "-r", type=int, default=32, show_default=True)
@click.option("--real-train", type=int, default=0, show_default=True,
              help="Keep only this many real training images (stratified) to study scarcity; 0 = all.")
@click.option("--test-fraction", type=float, default=0.3, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--test-data", default=None, help="Separate real store to test on (then no test split is taken).")
@click.option("--phantom-n", type=int, default=2000, show_default=True, help="Size of the phantom store (no --data).")
@click.option("--kimg", type=float, default=20.0, show_default=True, help="Training budget per classifier (thousand images).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--eval-every-kimg", type=float, default=2.0, show_default=True)
@click.option("--patience", type=int, default=4, show_default=True, help="Evaluations without improvement; 0 = no early stop.")
@click.option("--balanced-sampling", is_flag=True, help="Sample every class equally often.")
@click.option("--imagenet-weights", default=None, help="Local torchvision ImageNet checkpoint for the backbone.")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True)
@click.option("--out", default="runs", show_default=True)
@click.option("--name", default="augment_eval", show_default=True, help="Experiment folder suffix.")
@click.option("--resume", default=None, help="Experiment folder to finish (its options are reused).")
def main(data, synthetic, ratios, balance, classifiers, seeds, resolution, real_train, test_fraction, val_fraction,
         test_data, phantom_n, kimg, batch_size, lr, eval_every_kimg, patience, balanced_sampling, imagenet_weights,
         device, amp, out, name, resume):
    """Downstream classifier AUC with and without synthetic training images."""
    try:
        train = ClassifierTrainConfig(
            resolution=resolution, batch_size=batch_size, kimg=kimg, lr=lr, eval_every_kimg=eval_every_kimg,
            patience=patience, balanced_sampling=balanced_sampling, imagenet_weights=imagenet_weights,
            device=device, amp=amp)
        config = AugmentEvalConfig(
            data=data, phantom_n=phantom_n, resolution=resolution, synthetic=synthetic, ratios=_floats(ratios),
            balance=balance, classifiers=tuple(c.strip() for c in classifiers.split(",") if c.strip()),
            seeds=seeds, test_fraction=test_fraction, val_fraction=val_fraction, real_train=real_train,
            test_data=test_data, out=out, name=name, train=train)
        run_dir = run_experiment(config, resume=resume)
    except (ValueError, FileNotFoundError, StoreError, ResumeError) as error:
        raise click.ClickException(str(error))
    if run_dir is None:  # a non-main torchrun rank: rank 0 reports for the experiment
        return
    click.echo((run_dir / "table.md").read_text())
    click.echo(f"experiment: {run_dir}  (table.md, auc_vs_ratio.png, grids/)")


if __name__ == "__main__":
    main()
