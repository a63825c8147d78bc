"""PGGAN vs DCGAN vs LAPGAN with the same real images shown and the same seed:
`uv run apps/compare_unconditional [--data STORE] [--resolution 32] [--budget-kimg 14] [--out runs/compare]`.
Writes OUT/table.md, OUT/results.json and OUT/comparison.png (reals + one grid per architecture);
the training runs go to OUT/runs/ and are reused by a re-run. See docs/baselines.md."""

import json

import click
from lesion_data.store import StoreError
from lesion_metrics import MetricUnavailable, NotEnoughImages, list_metrics
from lesion_metrics.inception import WeightsError
from lesion_train.compare import ARCHS, DEFAULT_METRICS, CompareConfig, compare
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


@click.command(context_settings={"show_default": True, "max_content_width": 110})
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Prepared store or raw dataset folder. Default: built-in phantoms.")
@click.option("--resolution", type=int, default=32, help="Resolution every architecture is trained and judged at.")
@click.option("--budget-kimg", type=float, default=14.0, help="Thousands of real images shown to each architecture.")
@click.option("--preset", type=click.Choice(["cpu", "gpu"]), default="cpu", help="Network/optimiser preset of all three.")
@click.option("--archs", default=",".join(ARCHS), help="Comma-separated subset of the architectures.")
@click.option("--metrics", default=",".join(DEFAULT_METRICS), help=f"Comma-separated subset of: {', '.join(list_metrics())}.")
@click.option("--n", type=click.IntRange(min=2), default=1000,
              help="Generated images per model (and real ones, at most) for the metrics; FID at this n is biased "
                   "upwards and ranks the rows of one table only.")
@click.option("--phantom-count", type=int, default=2000, help="Phantom images when --data is not given.")
@click.option("--seed", type=int, default=0, help="Seed of training and of the evaluation.")
@click.option("--out", type=click.Path(), default="runs/compare", help="Output folder (runs, table, figure).")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--cpu-threads", type=int, default=0, show_default="0 = auto (idle cores)")
@click.option("--set", "settings", multiple=True, metavar="ARCH.OPTION=VALUE",
              help="Change one training option of one architecture on top of the preset, e.g. dcgan.ngf=128, "
                   "pggan.loop.minibatch_repeats=1 (names as in training_options.json). Repeatable.")
@click.option("--quiet", is_flag=True, help="No evaluation progress bars.")
def main(data, resolution, budget_kimg, preset, archs, metrics, n, phantom_count, seed, out, device, cpu_threads, settings, quiet):
    try:
        config = CompareConfig(data=data, resolution=resolution, budget_kimg=budget_kimg, seed=seed, preset=preset,
                               archs=_names(archs), metrics=_names(metrics), n=n, phantom_count=phantom_count, out=out,
                               device=device, cpu_threads=cpu_threads, overrides=_overrides(settings),
                               progress=not quiet)
        document = compare(config)
    except (StoreError, ResumeError, NonFiniteLossError, EvaluationError, NotEnoughImages, MetricUnavailable,
            WeightsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(open(document["table"]).read())
    click.echo(f"table: {document['table']}")
    click.echo(f"figure: {document['figure']}")


if __name__ == "__main__":
    main()
