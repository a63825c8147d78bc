"""Train a progressive GAN: `uv run apps/pggan_train` (phantoms, 32 px, CPU preset) or
`uv run apps/pggan_train --data STORE_OR_FOLDER --resolution 256 --preset gpu`; the DCGAN and
LAPGAN baselines with `--arch dcgan|lapgan` (same loop, run directories and sampling app).
Runs under `torchrun --standalone --nproc_per_node N` too. Prints the final grid's path."""

import dataclasses

import click
from click.core import ParameterSource
from lesion_data.store import StoreError
from lesion_train import baselines, pggan
from lesion_train.runs import NonFiniteLossError, ResumeError

FROM_PRESET = "from --preset"

# CLI option -> PGGANTrainConfig field (``loop.``/``schedule.`` for nested ones).
FIELDS = {
    "data": "data", "resolution": "resolution", "conditional": "conditional", "augment": "augment",
    "phantom_count": "phantom_count", "loss": "loss", "fmap_base": "fmap_base", "fmap_max": "fmap_max",
    "z_dim": "z_dim", "mbstd_group_size": "mbstd_group_size", "fused_scale": "fused_scale", "g_ema_beta": "g_ema_beta", "g_ema_rampup": "g_ema_rampup",
    "gp_lambda": "gp_lambda", "r1_gamma": "r1_gamma", "channels_last": "channels_last", "compile": "compile",
    "total_kimg": "loop.total_kimg", "minibatch_repeats": "loop.minibatch_repeats",
    "snapshot_ticks": "loop.snapshot_ticks", "grid_size": "loop.grid_size", "seed": "loop.seed",
    "device": "loop.device", "amp": "loop.amp", "cpu_threads": "loop.cpu_threads", "out": "loop.run_root",
    "name": "loop.name", "initial_resolution": "schedule.initial_resolution", "stabilize_kimg": "schedule.stabilize_kimg",
    "transition_kimg": "schedule.transition_kimg", "lr": "schedule.lr_base", "tick_kimg": "schedule.tick_kimg_base",
}


def baseline_options(arch: str, given: dict) -> dict:
    """PGGAN field names -> BaselineTrainConfig ones; PGGAN-only options are an error, not ignored."""
    renamed = {"schedule.lr_base": "lr", "schedule.tick_kimg_base": "tick_kimg"}
    fields = {f.name for f in dataclasses.fields(baselines.BaselineTrainConfig)}
    out = {}
    for key, value in given.items():
        key = renamed.get(key, key)
        if not (key.startswith("loop.") or key in fields):
            option = next(name for name, field in FIELDS.items() if field == key)
            raise click.UsageError(f"--{option.replace('_', '-')} is a PGGAN option; --arch {arch} does not use it")
        out[key] = value
    return out


@click.command(context_settings={"show_default": True, "max_content_width": 110})
@click.option("--arch", type=click.Choice(["pggan", *baselines.ARCHS]), default="pggan",
              help="Model family: the progressive GAN or a DCGAN/LAPGAN baseline (lesion_train.baselines); "
                   "with --resume the run's own.")
@click.option("--preset", type=click.Choice(pggan.PRESETS), default="cpu",
              help="cpu: narrow nets, short phases (minutes on 2 cores); gpu: the official v2-1gpu schedule.")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Prepared store or raw dataset folder (ISIC/HAM10000/folder). Default: built-in phantoms.")
@click.option("--resolution", type=int, default=None, show_default=FROM_PRESET, help="Final resolution (power of two).")
@click.option("--conditional/--unconditional", default=None, show_default="unconditional",
              help="Class-conditional (AC-GAN) on the store's diagnosis labels.")
@click.option("--augment/--no-augment", default=None, show_default="augment", help="Random flips/90-degree rotations.")
@click.option("--phantom-count", type=int, default=None, show_default="2000", help="Phantom images when --data is not given.")
@click.option("--loss", type=click.Choice(pggan.LOSSES), default=None, show_default="wgangp")
@click.option("--total-kimg", type=float, default=None, show_default=FROM_PRESET, help="Training length in thousands of images.")
@click.option("--initial-resolution", type=int, default=None, show_default=FROM_PRESET, help="First resolution trained.")
@click.option("--stabilize-kimg", type=float, default=None, show_default=FROM_PRESET, help="kimg per resolution before its fade.")
@click.option("--transition-kimg", type=float, default=None, show_default=FROM_PRESET, help="kimg of each fade-in.")
@click.option("--lr", type=float, default=None, show_default=FROM_PRESET, help="Base learning rate of G and D.")
@click.option("--tick-kimg", type=float, default=None, show_default=FROM_PRESET, help="Base kimg per tick (grid + log line).")
@click.option("--fmap-base", type=int, default=None, show_default=FROM_PRESET)
@click.option("--fmap-max", type=int, default=None, show_default=FROM_PRESET)
@click.option("--z-dim", type=int, default=None, show_default=FROM_PRESET)
@click.option("--mbstd-group-size", type=int, default=None, show_default="4")
@click.option("--fused-scale/--no-fused-scale", default=None, show_default="fused-scale",
              help="Official D block order: leaky ReLU after the downscale (--no-: before it).")
@click.option("--g-ema-beta", type=float, default=None, show_default=FROM_PRESET, help="Generator EMA per step.")
@click.option("--g-ema-rampup/--no-g-ema-rampup", default=None, show_default=FROM_PRESET,
              help="EMA beta_t = min(beta, (1+t)/(10+t)) for short runs.")
@click.option("--gp-lambda", type=float, default=None, show_default="10")
@click.option("--r1-gamma", type=float, default=None, show_default="10", help="R1 weight for --loss logistic.")
@click.option("--minibatch-repeats", type=int, default=None, show_default="4")
@click.option("--snapshot-ticks", type=int, default=None, show_default=FROM_PRESET)
@click.option("--grid-size", type=int, default=None, show_default="64", help="Fixed latents per grid.")
@click.option("--seed", type=int, default=None, show_default="0")
@click.option("--device", default=None, show_default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default=None, show_default="off")
@click.option("--channels-last/--no-channels-last", default=None, show_default="channels-last")
@click.option("--compile/--no-compile", default=None, show_default="no-compile",
              help="torch.compile the generator (for CUDA; the first step of each stage compiles).")
@click.option("--cpu-threads", type=int, default=None, show_default="0 = auto (idle cores)")
@click.option("--out", type=click.Path(), default=None, show_default="runs", help="Root of run directories.")
@click.option("--name", default=None, show_default="pggan", help="Run name suffix.")
@click.option("--resume", type=click.Path(exists=True), default=None,
              help="Run directory (its newest snapshot) or snapshot to continue; its options are reused.")
@click.pass_context
def main(ctx, arch, preset, resume, **options):
    given = {
        FIELDS[name]: value
        for name, value in options.items()
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    try:
        arch = baselines.run_arch(resume) if resume else arch
        if arch == "pggan":
            if resume:
                config = pggan.apply_overrides(pggan.load_run_config(resume), {**given, "loop.resume": resume})
            else:
                config = pggan.preset(preset, **given)
            result = pggan.train_pggan(config)
        else:
            given = baseline_options(arch, given)
            if resume:
                config = baselines.apply_overrides(baselines.load_run_config(resume), {**given, "loop.resume": resume})
            else:
                config = baselines.preset(arch, preset, **given)
            result = baselines.train_baseline(config)
    except (StoreError, ResumeError, NonFiniteLossError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if result.final_grid is not None:
        click.echo(f"run: {result.run_dir.resolve()}")
        click.echo(f"final snapshot: {result.final_snapshot.resolve() if result.final_snapshot else None}")
        click.echo(str(result.final_grid.resolve()))


if __name__ == "__main__":
    main()
