"""Evaluate generated images against real ones: `uv run apps/evaluate GENERATED REAL [--metrics fid,kid,swd,msssim,pr]
[--n 10000] [--seed 0] [--device auto] [--report DIR] [--json FILE]`.

GENERATED is a folder of images, a model directory (samples generated on the fly) or a run directory
(every snapshot in turn; results appended to RUN/metrics/<metric>.jsonl). REAL is a prepared store or
any folder / ISIC / HAM10000 tree lesion-data reads. See docs/metrics.md.
"""

import click
from lesion_metrics import MetricUnavailable, NotEnoughImages, list_metrics
from lesion_metrics.inception import WeightsError
from lesion_train import cli
from lesion_train.evaluation import EvaluateConfig, EvaluationError, evaluate, format_table


@cli.command()
@click.argument("generated", type=click.Path())
@click.argument("real", type=click.Path())
@click.option("--quiet", is_flag=True, help="No progress bars.")
@cli.ConfigOptions(EvaluateConfig, exclude=("progress",), types={
    "batch_size": click.IntRange(min=1), "inception_weights": click.Path(), "domain_classifier": click.Path(),
    "cache_dir": click.Path(), "output": click.Path(), "report": click.Path()},
    help={"metrics": f"Comma-separated subset of: {', '.join(list_metrics())}. Default: all that can run."})
def main(generated, real, quiet, options):
    try:
        config = options.build(EvaluateConfig, generated=generated, real=real, progress=not quiet)
        records = evaluate(config)
    except (EvaluationError, NotEnoughImages, MetricUnavailable, WeightsError, ValueError) as error:
        if getattr(error, "records", None):  # computed before the failure: printed, never lost
            click.echo(format_table(error.records))
        raise click.ClickException(str(error)) from None
    click.echo(format_table(records))
    if config.report:
        click.echo(f"report: {config.report}/index.html")


if __name__ == "__main__":
    main()
