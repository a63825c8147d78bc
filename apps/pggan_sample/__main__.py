"""Sample a trained generator: `uv run apps/pggan_sample RUN_OR_MODEL_DIR --n 1000 --out DIR
[--class melanoma] [--seed 0] [--interpolate] [--compile]`. Deterministic per seed."""

import click
from lesion_models import PretrainedLoadError
from lesion_train import cli
from lesion_train.runs import ResumeError
from lesion_train.sampling import sample_run


@cli.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--n", type=click.IntRange(min=1), default=64, help="Number of images.")
@click.option("--out", type=click.Path(), required=True, help="Output folder for PNGs and grid.png.")
@click.option("--class", "class_spec", default=None, help="Diagnosis name or index (conditional models).")
@click.option("--seed", type=int, default=0, help="Image i of a seed is always the same image.")
@click.option("--interpolate", is_flag=True, help="Also write interpolation.png, latent walks.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--compile", is_flag=True, help="torch.compile the generator (frozen weights): ~12 s once, then ~1.5x "
                                                "img/s on a CPU at 256 px; pays from a few hundred images.")
def main(source, n, out, class_spec, seed, interpolate, device, compile):
    try:
        written = sample_run(source, out, n, seed, class_spec, interpolate, device, compile)
    except (PretrainedLoadError, ResumeError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"model: {written['model'].resolve()}")
    if "interpolation" in written:
        click.echo(f"interpolation: {written['interpolation'].resolve()}")
    click.echo(str(written["grid"].resolve()))


if __name__ == "__main__":
    main()
