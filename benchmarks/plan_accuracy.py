"""How close ``lesion_train.plan``'s estimates come to real CPU training steps at small sizes.

    uv run python benchmarks/plan_accuracy.py                 # every case, one process each
    uv run python benchmarks/plan_accuracy.py --case dcgan-64

For each case (a trainer config whose schedule is one phase) the plan is traced on the meta device,
then the trainer's real step runs twice on the CPU on random data, in a fresh process:

- FLOPs: the plan's FLOPs per image against ``torch.utils.flop_counter.FlopCounterMode`` counting
  the real second step (benchmarks/_perf.count_flops);
- memory: the plan's peak per device against (a) the growth of the process's peak resident set
  size (VmHWM, reset just before the first step) over the resident size before the networks were
  built, and (b) the torch tensors alive at once in a real third step, counted by the plan's own
  tracker. (a) also holds what is not a torch tensor (CPU kernel memory, the C allocator's slack,
  the process's one-off growth); the plan's CPU estimate, peak + ``CPU_SAVED_OVERHEAD`` x the
  saved activations, is compared with (a) in the last column.

Prints one row per case and the errors; asserts nothing. docs/gpu.md quotes the table.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _perf  # noqa: E402

# name -> (trainer, overrides); every schedule is a single phase.
CASES = {
    "pggan-cpu-32": ("pggan", dict(preset="cpu", resolution=32, **{"schedule.initial_resolution": 32})),
    "pggan-gpu-32": ("pggan", dict(preset="gpu", resolution=32, **{"schedule.initial_resolution": 32,
                                                                   "schedule.minibatch": {32: 16}})),
    "pggan-gpu-64-fade": ("pggan", dict(preset="gpu", resolution=64, **{
        "schedule.initial_resolution": 32, "schedule.stabilize_kimg": 0.0, "schedule.transition_kimg": 1000.0,
        "schedule.minibatch": {64: 4}, "loop.total_kimg": 1.0})),
    "pggan-r1-32-half-width": ("pggan", dict(preset="gpu", resolution=32, loss="logistic", fmap_max=256, **{
        "schedule.initial_resolution": 32, "schedule.minibatch": {32: 16}})),
    "pggan-logistic-no-r1-32": ("pggan", dict(preset="gpu", resolution=32, loss="logistic", fmap_max=256, r1_gamma=0.0,
                                              **{"schedule.initial_resolution": 32, "schedule.minibatch": {32: 16}})),
    "dcgan-64": ("dcgan", dict(preset="gpu", resolution=64, batch_size=32)),
    "dcgan-64-b128": ("dcgan", dict(preset="gpu", resolution=64, batch_size=128)),
    "lapgan-64": ("lapgan", dict(preset="gpu", resolution=64, batch_size=16)),
    "pix2pixhd-128": ("mask2image", dict(arch="pix2pixhd", decay_start=1.0, resolution=128, batch_size=2, ngf=32)),
    "ours-128": ("mask2image", dict(arch="ours", decay_start=1.0, resolution=128, batch_size=2, ngf=32)),
    "pix2pix-256": ("mask2image", dict(arch="pix2pix", decay_start=1.0, resolution=256, batch_size=4)),
    "spade-64": ("mask2image", dict(arch="spade", decay_start=1.0, resolution=64, batch_size=2, ngf=32)),
}


def build_config(trainer: str, overrides: dict):
    from lesion_train import baselines, mask2image, pggan

    overrides = dict(overrides)
    if trainer == "pggan":
        return pggan.preset(overrides.pop("preset"), **overrides)
    if trainer in baselines.ARCHS:
        return baselines.preset(trainer, overrides.pop("preset"), **overrides)
    return mask2image.Mask2ImageConfig(**overrides)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_case(name: str) -> dict:
    """Plan, then two real steps, in this process (called in a fresh one per case)."""
    from lesion_train import baselines, mask2image, pggan, plan
    from lesion_train.distributed import DistEnv

    trainer, overrides = CASES[name]
    config = build_config(trainer, overrides)
    planned = plan.plan(config)
    if len(planned.phases) != 1:
        raise RuntimeError(f"{name}: expected one phase, the plan has {len(planned.phases)}")
    phase_plan = planned.phases[0]
    torch.manual_seed(0)
    env = DistEnv()
    gc.collect()
    rss_before = _status_kib("VmRSS")
    if trainer == "pggan":
        recipe = pggan.PGGANRecipe(config, 0, env)
        phase = config.schedule.phase(int(phase_plan.kimg_start * 500 + phase_plan.kimg_end * 500), config.resolution)
    elif trainer in baselines.ARCHS:
        recipe = (baselines.DCGANRecipe if trainer == "dcgan" else baselines.LAPGANRecipe)(config, env)
        phase = recipe.phase(0)
    else:
        recipe = mask2image.Mask2ImageTrainer(config, 3, env)
        phase = recipe.phase(0)
    n, res = phase.batch_size, phase.resolution
    batch = {"images": torch.rand(n, 3, res, res) * 2 - 1}
    if trainer == "mask2image":
        batch["masks"] = (torch.rand(n, 1, res, res) > 0.5).float()
        batch["labels"] = torch.randint(0, 3, (n,))
    recipe.enter_phase(phase)
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident size starts again from now
    recipe.train_step(batch, phase)
    recipe.train_step(batch, phase)
    measured_peak = (_status_kib("VmHWM") - rss_before) * 1024
    # A third step counts FLOPs and, with the plan's own tracker, the torch tensors alive at once.
    tracker = plan._StepTracer()
    for t in plan._state_tensors(recipe) + list(batch.values()):
        tracker.track(t)
    with tracker:
        flops = _perf.count_flops(lambda: recipe.train_step(batch, phase)) / n
    return {"case": name, "batch": n, "resolution": res, "alpha": phase.alpha,
            "planned_flops": phase_plan.flops_per_image, "measured_flops": flops,
            "planned_peak": phase_plan.peak_bytes, "measured_peak": measured_peak, "tensor_peak": tracker.peak,
            "planned_saved": phase_plan.saved_bytes, "planned_cpu": phase_plan.cpu_resident_bytes}


@click.command(context_settings={"show_default": True})
@click.option("--case", "cases", multiple=True, type=click.Choice(sorted(CASES)), help="Default: every case.")
@click.option("--threads", type=int, default=1)
@click.option("--worker", is_flag=True, hidden=True)
def main(cases, threads, worker):
    torch.set_num_threads(threads)
    if worker:
        print(json.dumps(run_case(cases[0])))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"{'case':<24} {'batch':>5} {'GFLOP/img plan':>14} {'real':>9} {'err':>6}  "
          f"{'peak MiB plan':>13} {'RSS':>6} {'err':>6} {'tensors':>7} {'err':>6}  {'saved MiB':>9}  "
          f"{'CPU MiB plan':>12} {'err':>6}")
    for name in cases or CASES:
        out = subprocess.run([sys.executable, __file__, "--worker", "--case", name, "--threads", str(threads)],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            print(f"{name:<24} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        flop_err = r["planned_flops"] / r["measured_flops"] - 1
        peak_err = r["planned_peak"] / r["measured_peak"] - 1
        tensor_err = r["planned_peak"] / r["tensor_peak"] - 1
        cpu_err = r["planned_cpu"] / r["measured_peak"] - 1
        print(f"{name:<24} {r['batch']:>5} {r['planned_flops'] / 1e9:>14.2f} {r['measured_flops'] / 1e9:>9.2f} "
              f"{flop_err:>+6.1%}  {r['planned_peak'] / 2**20:>13.0f} {r['measured_peak'] / 2**20:>6.0f} "
              f"{peak_err:>+6.1%} {r['tensor_peak'] / 2**20:>7.0f} {tensor_err:>+6.1%}  "
              f"{r['planned_saved'] / 2**20:>9.0f}  {r['planned_cpu'] / 2**20:>12.0f} {cpu_err:>+6.1%}", flush=True)


if __name__ == "__main__":
    main()
