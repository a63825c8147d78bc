"""PGGAN vs DCGAN vs LAPGAN with the same real images shown and the same seed:
`uv run apps/compare_unconditional [--data STORE] [--resolution 32] [--kimg 14] [--out runs/compare]`.
Writes OUT/table.md, OUT/results.json and OUT/comparison.png (reals + one grid per architecture);
the training runs go to OUT/runs/ and are reused by a re-run. See docs/baselines.md."""

import json
from pathlib import Path

import click
from lesion_data.store import StoreError
from lesion_train import cli
from lesion_metrics import MetricUnavailable, NotEnoughImages, list_metrics
from lesion_metrics.inception import WeightsError
from lesion_train.compare import CompareConfig, compare, train_configs
from lesion_train.evaluation import EvaluationError
from lesion_train.runs import NonFiniteLossError, ResumeError


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _overrides(settings: tuple[str, ...]) -> dict:
    """``ARCH.OPTION=VALUE`` (VALUE as JSON, else a string) -> {arch: {option: value}}."""
    out: dict = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        arch, dot, option = key.partition(".")
        if not (sep and dot and option):
            raise click.BadParameter(f"{setting!r} is not ARCH.OPTION=VALUE", param_hint="--set")
        try:
            out.setdefault(arch, {})[option] = json.loads(value)
        except json.JSONDecodeError:
            out[arch][option] = value
    return out


@cli.command()
@click.option("--set", "settings", multiple=True, metavar="ARCH.OPTION=VALUE",
              help="Change one training option of one architecture on top of the preset, e.g. dcgan.ngf=128, "
                   "pggan.loop.minibatch_repeats=1 (names as in training_options.json). Repeatable.")
@click.option("--quiet", is_flag=True, help="No evaluation progress bars.")
@cli.dry_run_option
@cli.ConfigOptions(CompareConfig, exclude=("progress",),
                   types={"data": click.Path(exists=True), "preset": ("cpu", "gpu"), "n": click.IntRange(min=2)},
                   help={"metrics": f"Comma-separated subset of: {', '.join(list_metrics())}."})
def main(settings, quiet, dry_run, options):
    try:
        config = options.build(CompareConfig, overrides=_overrides(settings), progress=not quiet)
        if dry_run:
            cli.print_config({"compare": config, "runs": train_configs(config)})
            return
        document = compare(config)
    except (StoreError, ResumeError, NonFiniteLossError, EvaluationError, NotEnoughImages, MetricUnavailable,
            WeightsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(Path(document["table"]).read_text())
    click.echo(f"table: {document['table']}")
    click.echo(f"figure: {document['figure']}")


if __name__ == "__main__":
    main()
