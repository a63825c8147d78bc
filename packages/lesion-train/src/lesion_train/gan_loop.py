"""The generic GAN training driver: data iteration, ticks, logging, grids, snapshots, resume, DDP,
non-finite guard. Model families plug in a :class:`Recipe` (the schedule and the G/D step); the
driver knows nothing about progressive growing, so DCGAN/LAPGAN baselines reuse it unchanged.

Shaped after NVlabs' training loops: time is counted in images shown across all ranks (``nimg``);
the schedule is re-evaluated every ``minibatch_repeats`` steps; every tick writes a grid of fixed
latents from the EMA generator and a JSONL line; every ``snapshot_ticks`` ticks (and at the end) an
atomic snapshot. Data parallelism averages gradients with one all-reduce per network and step, as
StyleGAN2-ADA does, instead of wrapping in ``DistributedDataParallel``: the gradient penalty needs
double backward and a growing network leaves layers unused, both of which DDP handles poorly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.distributed as dist
from lesion_models import PretrainedLoadError, load_pretrained
from tqdm import tqdm

from lesion_train import runs
from lesion_train.distributed import (
    DistEnv,
    barrier,
    broadcast_object,
    gather_objects,
    mean_across_ranks,
    peak_memory_mb,
)
from lesion_train.monitor import TrainingLog, timing


@dataclasses.dataclass
class LoopConfig:
    """Options every GAN trainer shares (written to ``training_options.json`` with the rest)."""

    total_kimg: float = 40.0
    minibatch_repeats: int = 4  # the schedule is held for this many steps (official: 4)
    snapshot_ticks: int = 10  # official network_snapshot_ticks
    grid_size: int = 64  # fixed latents in every grid
    seed: int = 0
    device: str = "auto"
    amp: str = "off"  # off | bf16 | fp16
    cpu_threads: int = 0  # 0 = auto: the idle cores of the host shared among local ranks
    run_root: str = "runs"
    name: str = "gan"
    resume: str | None = None  # a run directory (its newest snapshot) or one snapshot directory

    def __post_init__(self):
        require_positive(kimg=self.total_kimg, snapshot_ticks=self.snapshot_ticks,
                         minibatch_repeats=self.minibatch_repeats, grid_size=self.grid_size)


def require_positive(**values: float) -> None:
    """A ValueError naming the first option (by its command-line name) that is not above zero."""
    for name, value in values.items():
        if not value > 0:  # NaN too
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value:g}")


@dataclasses.dataclass(frozen=True)
class Phase:
    """What the schedule asks for at a given ``nimg``; a recipe may reset optimizers when ``key`` changes."""

    resolution: int
    batch_size: int  # global, summed over ranks
    tick_kimg: float
    alpha: float = 1.0
    lr_g: float = 0.001
    lr_d: float = 0.001
    key: tuple = ()


class Recipe(Protocol):
    """A model family's part of training. ``models`` holds at least ``G_ema``; every model has
    ``save_pretrained`` and the same ``state_dict`` keys as the saved one."""

    models: dict[str, torch.nn.Module]
    z_dim: int
    num_classes: int

    def phase(self, nimg: int) -> Phase: ...

    def enter_phase(self, phase: Phase) -> None: ...

    def train_step(self, batch: dict[str, torch.Tensor], phase: Phase) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


BatchFactory = Callable[[int, int, int], Iterator[dict]]  # (resolution, per-rank batch, seed) -> batches


def per_device_batch(phase: Phase, world_size: int) -> int:
    """The images each device takes per step; a minibatch that leaves a device none, or does not
    divide over the devices, is a one-line error naming the resolution."""
    if phase.batch_size < world_size or phase.batch_size % world_size:
        raise ValueError(f"{phase.resolution} px: a minibatch of {phase.batch_size} images cannot give each of "
                         f"{world_size} devices the same number (at least one)")
    return phase.batch_size // world_size


def check_schedule(recipe: Recipe, total_kimg: float, world_size: int) -> None:
    """Every phase of the run, checked with :func:`per_device_batch` before the first step: a schedule
    whose high resolutions cannot run on this many devices fails at the start, not hours in."""
    for kimg in [*range(math.ceil(total_kimg)), total_kimg]:
        per_device_batch(recipe.phase(int(kimg * 1000)), world_size)


def average_gradients(parameters, env: DistEnv) -> None:
    """Mean of the gradients over ranks, one flattened all-reduce (no-op in a single process)."""
    if not env.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= env.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


class TwoPlayerOptim:
    """The G/D optimizer step and optimizer state that every GAN recipe shares.

    Subclasses set ``env``, ``opt_g``, ``opt_d``, ``scaler_g`` and ``scaler_d``."""

    def _step(self, loss, optimizer, scaler, model) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        average_gradients(model.parameters(), self.env)
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict:
        return {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state["scaler_g"]:  # a disabled scaler saves {}, which it cannot load back
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])


def broadcast_parameters(module: torch.nn.Module, env: DistEnv) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if env.distributed:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def configure_threads(requested: int, env: DistEnv) -> int:
    """Intra-op threads on the CPU. Auto counts idle cores (load average) because oversubscribed
    oneDNN threads spin at every parallel region's barrier while a descheduled thread catches up: 2
    threads on 2 busy cores ran a step 10x slower than 1 thread."""
    if env.device.type != "cpu":
        return torch.get_num_threads()
    threads = requested
    if threads <= 0:
        cores = os.cpu_count() or 1
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
        idle = cores - math.floor(os.getloadavg()[0])
        threads = max(1, min(cores // max(local_ranks, 1), idle))
    torch.set_num_threads(threads)
    return threads


def _any_rank_true(flag: bool, env: DistEnv) -> bool:
    if not env.distributed:
        return flag
    value = torch.tensor([float(flag)], device=env.device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def _check_step(terms: Mapping[str, torch.Tensor], step: int, env: DistEnv) -> None:
    """Stop on a NaN/inf loss on any rank (all ranks stop together, so none hangs)."""
    total = torch.stack([t.detach().float().sum() for t in terms.values()]).sum()
    if _any_rank_true(not bool(torch.isfinite(total)), env):
        runs.check_finite(terms, step)  # raises naming the loss on the rank that saw it
        raise runs.NonFiniteLossError(f"step {step}: a loss is non-finite on another rank; stopping "
                                      "(the last snapshot is intact)")


def _check_weights(models: Mapping[str, torch.nn.Module], step: int) -> None:
    for name, model in models.items():
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise runs.NonFiniteLossError(f"step {step}: {name} has non-finite weights; not saving a snapshot "
                                          "(the last snapshot is intact)")


@torch.no_grad()
def generate_grid(G: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None, chunk: int = 32) -> torch.Tensor:
    was_training = G.training
    G.eval()
    out = torch.cat([G(z[i : i + chunk], None if labels is None else labels[i : i + chunk]) for i in range(0, len(z), chunk)])
    G.train(was_training)
    return out


def fixed_latents(recipe: Recipe, n: int, seed: int, device: torch.device):
    """The grid's latents and labels: identical in every tick and after a resume."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, recipe.z_dim, generator=gen).to(device)
    labels = None
    if recipe.num_classes:
        # One row per class, cycling, so a grid shows every diagnosis.
        ncol = max(1, math.ceil(math.sqrt(n)))
        labels = ((torch.arange(n) // ncol) % recipe.num_classes).to(device)
    return z, labels


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    final_grid: Path | None
    final_snapshot: Path | None
    kimg: float


def train(
    recipe: Recipe,
    config: LoopConfig,
    options: object,
    batches: BatchFactory,
    env: DistEnv,
    reals_grid: Callable[[], torch.Tensor] | None = None,
    render_grid: Callable[[Path], Path] | None = None,
) -> RunResult:
    """Run (or resume) training until ``config.total_kimg``; ``options`` is what gets written to
    ``training_options.json`` (every resolved option of the calling trainer). Every tick's grid is
    ``render_grid(path)`` on the main rank, by default fixed latents through ``models["G_ema"]``.

    With an unchanged world size a resume is exact: every rank's RNG and data iterator position
    (when it has a ``state_dict``) come back with the weights and optimizers."""
    nimg, step, tick = 0, 0, 0
    saved_data = None
    if config.resume:
        run_dir, candidates = runs.resume_candidates(config.resume) if env.is_main else (None, None)
        run_dir, candidates = broadcast_object((run_dir, candidates))
        snapshot, state = _resume(recipe, candidates, env)
        nimg, step, tick = int(state["nimg"]), int(state["step"]), int(state["tick"])
        if state.get("world_size") == env.world_size:
            saved_data = state.get("data")
            rng = state.get("rng")
            if isinstance(rng, list):
                runs.restore_rng_state(rng[env.rank])
            elif rng is not None and env.is_main:  # snapshots from before per-rank states: rank 0's only
                runs.restore_rng_state(rng)
    else:
        run_dir = runs.create_run_dir(config.run_root, config.name) if env.is_main else None
        run_dir = broadcast_object(run_dir)
    for model in recipe.models.values():
        broadcast_parameters(model, env)
    log = TrainingLog(run_dir) if env.is_main else None
    if env.is_main:
        runs.write_options(run_dir, options)
        if reals_grid is not None and not (run_dir / "grids" / "reals.png").exists():
            runs.save_image_grid(reals_grid(), run_dir / "grids" / "reals.png")

    if render_grid is None:
        grid_z, grid_labels = fixed_latents(recipe, config.grid_size, config.seed, env.device)

        def render_grid(path: Path) -> Path:
            return runs.save_image_grid(generate_grid(recipe.models["G_ema"], grid_z, grid_labels), path)

    total_nimg = int(config.total_kimg * 1000)
    check_schedule(recipe, config.total_kimg, env.world_size)
    data_key, data_seed, data_iter = None, None, None
    final_grid = final_snapshot = None
    bar = tqdm(total=round(max(config.total_kimg, nimg / 1000), 3), initial=round(nimg / 1000, 3), unit="kimg", disable=not env.is_main,
               dynamic_ncols=True, file=sys.stderr, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}{postfix}]")
    tick_start_nimg, tick_start_time = nimg, time.time()
    sums: dict[str, torch.Tensor] = {}
    count = 0

    def save(kimg_now: float, rng_states: list, data_states: list | None) -> Path:
        _check_weights(recipe.models, step)
        train_state = {
            "nimg": nimg, "step": step, "tick": tick, "world_size": env.world_size,
            "recipe": recipe.state_dict(), "rng": rng_states,
        }
        if data_states is not None:
            train_state["data"] = {"key": list(data_key), "seed": data_seed, "states": data_states}
        return runs.save_snapshot(run_dir, kimg_now, recipe.models, train_state)

    try:
        while nimg < total_nimg:
            phase = recipe.phase(nimg)
            per_rank = per_device_batch(phase, env.world_size)
            if (phase.resolution, per_rank) != data_key:
                data_key = (phase.resolution, per_rank)
                resumed = saved_data is not None and tuple(saved_data["key"]) == data_key
                # Otherwise seeded by the position too, so a resumed run does not replay the first batches.
                data_seed = saved_data["seed"] if resumed else config.seed * 1_000_003 + nimg
                data_iter = batches(phase.resolution, per_rank, data_seed)
                if resumed:
                    data_iter.load_state_dict(saved_data["states"][env.rank])
                saved_data = None
            recipe.enter_phase(phase)
            for _ in range(config.minibatch_repeats):
                terms = recipe.train_step(next(data_iter), phase)
                _check_step(terms, step, env)
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0) + value.detach().float()
                count += 1
                nimg += phase.batch_size
                step += 1
                bar.update(min(phase.batch_size / 1000, bar.total - bar.n))  # the last step may overshoot
            fade = f" a={phase.alpha:.2f}" if phase.alpha < 1 else ""
            bar.set_postfix_str(f"{phase.resolution}px{fade}", refresh=False)

            done = nimg >= total_nimg
            if nimg < tick_start_nimg + phase.tick_kimg * 1000 and not done:
                continue
            # End of a tick.
            tick += 1
            elapsed = time.time() - tick_start_time
            shown = nimg - tick_start_nimg
            stats = mean_across_ranks({k: float(v) / count for k, v in sums.items()}, env.device)
            record = {
                "tick": tick, "kimg": nimg / 1000, "step": step, "resolution": phase.resolution,
                "alpha": round(phase.alpha, 6), "batch": phase.batch_size, "lr_g": phase.lr_g, "lr_d": phase.lr_d,
                **{k: round(v, 6) for k, v in stats.items()},
                **timing(shown, elapsed, peak_memory_mb(env.device)), "world_size": env.world_size,
            }
            if env.is_main:
                final_grid = render_grid(run_dir / "grids" / f"fakes_{runs.kimg_name(nimg / 1000)}.png")
                log.append(record, final_grid)
            if tick % config.snapshot_ticks == 0 or done:
                # Every rank's RNG and data position: each rank draws its own latents and reads and
                # augments its own shard. Taken after the grid, as an uninterrupted run goes on from there.
                data_states = gather_objects(data_iter.state_dict(), env) if hasattr(data_iter, "state_dict") else None
                rng_states = gather_objects(runs.capture_rng_state(), env)
                if env.is_main:
                    final_snapshot = save(nimg / 1000, rng_states, data_states)
            barrier()
            sums, count = {}, 0
            tick_start_nimg, tick_start_time = nimg, time.time()
    finally:
        bar.close()
        if log is not None:
            log.close()
    if final_grid is None and env.is_main:  # resumed at or past the end: still hand back a grid
        final_grid = render_grid(run_dir / "grids" / f"fakes_{runs.kimg_name(nimg / 1000)}.png")
    if env.is_main:
        runs.clean_snapshots(run_dir)
    final_snapshot = final_snapshot or runs.latest_snapshot(run_dir)
    return RunResult(run_dir=run_dir, final_grid=final_grid, final_snapshot=final_snapshot, kimg=nimg / 1000)


def _resume(recipe: Recipe, candidates: list[Path], env: DistEnv) -> tuple[Path, dict]:
    """Load the first snapshot of ``candidates`` (newest first) whose training state and models all
    read back into ``recipe``; one stderr line names each snapshot skipped as unreadable. A snapshot
    that reads but does not fit the configured networks is an error, not skipped."""
    for index, snapshot in enumerate(candidates):
        try:
            # On the CPU: RNG states must stay CPU tensors; Adam moves its state to the parameters' device.
            state = runs.load_training_state(snapshot, "cpu")
            saved = {name: load_pretrained(snapshot / name, env.device) for name in recipe.models}
        except (runs.ResumeError, PretrainedLoadError) as error:
            if index == len(candidates) - 1:
                raise runs.ResumeError(str(error) + (f" (and {index} newer snapshot(s) skipped)" if index else "")) from None
            if env.is_main:
                print(f"resume: skipping snapshot {snapshot.name}: {str(error).splitlines()[0]}", file=sys.stderr)
            continue
        if "recipe" not in state:
            raise runs.ResumeError(f"{snapshot}: training state from an older lesion-gan (no 'recipe' entry); "
                                   "start a new run")
        for name, model in recipe.models.items():
            try:
                model.load_state_dict(saved[name].state_dict())
            except RuntimeError as error:
                first = str(error).splitlines()[0]
                raise runs.ResumeError(f"{snapshot / name}: does not fit the configured network ({first})") from None
        recipe.load_state_dict(state["recipe"])
        if index and env.is_main:
            print(f"resume: from snapshot {snapshot.name}", file=sys.stderr)
        return snapshot, state
    raise runs.ResumeError("no snapshot to resume from")
