"""PGGAN vs DCGAN vs LAPGAN with the same real images shown and the same seed:
`uv run apps/compare_unconditional [--data STORE] [--resolution 32] [--kimg 14] [--out runs/compare]`.
Writes OUT/table.md, OUT/results.json, OUT/comparison.png (reals + one grid per architecture) and
OUT/curves.png (every metric against kimg at --checkpoints); the training runs go to OUT/runs/ and
the evaluations to OUT/evaluations.jsonl, both reused by a re-run. See docs/baselines.md."""


import click
from lesion_data.store import StoreError
from lesion_metrics import MetricUnavailable, NotEnoughImages, list_metrics
from lesion_metrics.inception import WeightsError
from lesion_train import cli
from lesion_train.compare import CompareConfig, compare, summary, train_configs
from lesion_train.evaluation import EvaluationError
from lesion_train.runs import NonFiniteLossError, ResumeError


@cli.command()
@cli.set_option("dcgan.ngf=128 or pggan.loop.minibatch_repeats=1, on top of the preset")
@click.option("--quiet", is_flag=True, help="No evaluation progress bars.")
@cli.dry_run_option
@cli.ConfigOptions(CompareConfig, exclude=("progress",),
                   types={"data": click.Path(exists=True), "preset": ("cpu", "gpu"), "n": click.IntRange(min=2)},
                   help={"metrics": f"Comma-separated subset of: {', '.join(list_metrics())}."})
def main(settings, quiet, dry_run, options):
    try:
        config = options.build(CompareConfig, overrides=settings, progress=not quiet)
        if dry_run:
            cli.print_config({"compare": config, "runs": train_configs(config)})
            return
        document = compare(config)
    except (StoreError, ResumeError, NonFiniteLossError, EvaluationError, NotEnoughImages, MetricUnavailable,
            WeightsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(summary(document))


if __name__ == "__main__":
    main()
