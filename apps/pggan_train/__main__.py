"""Train a progressive GAN: `uv run apps/pggan_train` (phantoms, 32 px, CPU preset) or
`uv run apps/pggan_train --data STORE_OR_FOLDER --resolution 256 --preset gpu`; the DCGAN and
LAPGAN baselines with `--arch dcgan|lapgan` (same loop, run directories and sampling app).
Runs under `torchrun --standalone --nproc_per_node N` too. Prints the final grid's path; with `--plan`,
the run's cost (FLOPs, memory per device, wall time) instead, in seconds and without training."""

import os

import click
from lesion_data.store import StoreError
from lesion_train import baselines, cli, pggan
from lesion_train.runs import NonFiniteLossError, ResumeError

ARCHITECTURES = cli.architectures()
OPTIONS = cli.ConfigOptions(
    *dict.fromkeys(entry.config for entry in ARCHITECTURES.values()),
    exclude=("arch", "preset", "resume"), types={"loss": pggan.LOSSES, "data": click.Path(exists=True)},
    defaults_from=[entry.preset(name, {}, 1) for entry in ARCHITECTURES.values() for name in pggan.PRESETS],
    varying="from --preset",
)


@cli.command()
@click.option("--arch", type=click.Choice(list(ARCHITECTURES)), default="pggan",
              help="Model family: the progressive GAN or a DCGAN/LAPGAN baseline; with --resume the run's own.")
@click.option("--preset", type=click.Choice(pggan.PRESETS), default="cpu",
              help="cpu: narrow nets, short phases (minutes on 2 cores); gpu: the official v2 schedule for the "
                   "device count (torchrun's WORLD_SIZE, or --plan-devices; baselines: the published networks at 64 px).")
@click.option("--resume", type=click.Path(exists=True), default=None,
              help="Run directory (its newest snapshot) or snapshot to continue; its options are reused.")
@cli.dry_run_option
@cli.plan_options
@OPTIONS
def main(arch, preset, resume, dry_run, plan, options):
    try:
        arch = baselines.run_arch(resume) if resume else arch
        entry = ARCHITECTURES[arch]
        for name in options.unused(entry.config):
            owners = [other.upper() for other, e in ARCHITECTURES.items() if e.config in options.specs[name].paths]
            raise click.UsageError(f"--{name} is a {'/'.join(owners)} option; --arch {arch} does not use it")
        given = options.overrides(entry.config)
        if resume:
            config = entry.apply_overrides(entry.load_run_config(resume), {**given, "loop.resume": resume})
        else:
            devices = plan.devices if plan else int(os.environ.get("WORLD_SIZE", "1"))
            config = entry.preset(preset, given, devices)
        if cli.preview(config, dry_run, plan):
            return
        result = entry.train(config)
    except (StoreError, ResumeError, NonFiniteLossError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if result.final_grid is not None:
        click.echo(f"run: {result.run_dir.resolve()}")
        click.echo(f"final snapshot: {result.final_snapshot.resolve() if result.final_snapshot else None}")
        click.echo(str(result.final_grid.resolve()))


if __name__ == "__main__":
    main()
