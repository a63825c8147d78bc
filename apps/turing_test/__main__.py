"""Visual Turing test: experts tell real from synthetic lesion images in a local web app.

    uv run apps/turing_test serve --real REAL_DIR --synthetic FAKE_DIR [--n 60] [--port 8000]
    uv run apps/turing_test report turing_test.sqlite --out turing_report
"""

import click
from lesion_data import CLASS_NAMES
from lesion_train.cli import group
from lesion_turing import ServeConfig, StudyError, StudySpec, open_study, write_report
from lesion_turing import serve as serve_study
from lesion_turing.images import ImageError
from tqdm import tqdm


@group()
def cli():
    """Run a visual Turing test and report its statistics."""


@cli.command()
@click.option("--real", type=click.Path(exists=True, file_okay=False), help="Folder of real images.")
@click.option("--synthetic", type=click.Path(exists=True, file_okay=False), help="Folder of synthetic images.")
@click.option("--db", default="turing_test.sqlite", show_default=True, type=click.Path(dir_okay=False),
              help="Study database: created on first start, resumed afterwards.")
@click.option("--n", default=60, show_default=True, help="Images per quiz, half real and half synthetic.")
@click.option("--size", default=256, show_default=True, help="Every image is shown at size x size px.")
@click.option("--jpeg-quality", default=90, show_default=True,
              help="Same JPEG round trip for every image so compression traces match (0: none).")
@click.option("--seed", default=0, show_default=True, help="Seed of the image selection (rater orders are random).")
@click.option("--diagnosis/--no-diagnosis", default=False, show_default=True,
              help=f"Also ask for an optional diagnosis ({', '.join(CLASS_NAMES)}).")
@click.option("--rater", "raters", multiple=True, help="Create this rater and print their personal link (repeatable).")
@click.option("--signup/--no-signup", default=True, show_default=True,
              help="Let raters start by typing a name; with --no-signup only --rater links work.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Use 0.0.0.0 to serve the local network.")
@click.option("--port", default=8000, show_default=True, help="0 picks a free port.")
def serve(real, synthetic, db, n, size, jpeg_quality, seed, diagnosis, raters, signup, host, port):
    """Serve the quiz (creates the study from the two folders on first start)."""
    if (real is None) != (synthetic is None):
        raise click.UsageError("give both --real and --synthetic, or neither to resume an existing --db")
    spec = None
    if real is not None:
        spec = StudySpec(real, synthetic, n, size, jpeg_quality, seed, CLASS_NAMES if diagnosis else ())
    try:
        study = open_study(db, spec, progress=lambda it: tqdm(it, desc="re-encoding images", unit="img"))
    except (StudyError, ImageError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        serve_study(ServeConfig(db, host, port, tuple(raters), signup), study)
    finally:
        study.close()


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default="turing_report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for report.html, report.json and fooled.png.")
def report(db, out):
    """Write the statistics of a study as HTML and JSON."""
    try:
        paths = write_report(db, out)
    except StudyError as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths.values():
        click.echo(path)


if __name__ == "__main__":
    cli()
