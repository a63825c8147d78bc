"""What every GAN trainer shares around its recipe: the data (through lesion-data's one cache),
threads and seeds, the batch iterator, the options written to ``training_options.json``, and
loading a run's configuration back with dotted overrides (``loop.total_kimg``).

A trainer's configuration is a dataclass that satisfies :class:`TrainerConfig` (PGGAN, the
DCGAN/LAPGAN baselines and mask2image do), so every run directory's ``training_options.json`` has
the same shape: the family's own fields, ``loop`` (``gan_loop.LoopConfig``) and ``resolved``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import torch
from lesion_data.loader import StoreBatches
from lesion_data.prepare import open_or_prepare
from lesion_data.store import PreparedStore

from lesion_train import gan_loop, runs
from lesion_train.distributed import DistEnv, barrier, init_distributed, shutdown_distributed


class DataConfig(Protocol):
    data: str | None  # prepared store or raw dataset folder; None = built-in phantoms
    phantom_count: int
    resolution: int


class TrainerConfig(DataConfig, Protocol):
    """The fields :func:`train` reads; the rest belongs to the model family."""

    augment: bool
    loop: gan_loop.LoopConfig


Config = TypeVar("Config")


def open_data(config: DataConfig, env: DistEnv) -> PreparedStore:
    """The prepared store to train on (``lesion_data.prepare.open_or_prepare``): the main rank
    prepares a dataset folder once while the others wait, so the loop never decodes JPEGs."""
    if env.is_main:
        open_or_prepare(config.data, config.resolution, phantom_count=config.phantom_count)
    barrier()
    return open_or_prepare(config.data, config.resolution, phantom_count=config.phantom_count, progress=False)


def train(config: TrainerConfig, build_recipe: Callable[[PreparedStore, DistEnv], gan_loop.Recipe],
          with_masks: bool = False) -> gan_loop.RunResult:
    """Threads, seed, store, ``build_recipe(store, env)``, batches and options around
    ``gan_loop.train`` (single process or torchrun). A recipe with a ``render_grid(path)`` method
    draws its own grids (else fixed latents through ``G_ema``, next to the store's reals), and one
    with ``resolved_options()`` adds those entries to ``resolved`` in ``training_options.json``."""
    if not config.loop.resume:
        runs.check_output_folder(config.loop.run_root)  # before any data is prepared
    env = init_distributed(config.loop.device)
    try:
        gan_loop.configure_threads(config.loop.cpu_threads, env)
        torch.manual_seed(config.loop.seed * 1000 + env.rank)
        store = open_data(config, env)
        recipe = build_recipe(store, env)

        def batches(resolution: int, per_rank: int, seed: int) -> StoreBatches:
            return StoreBatches(store, resolution, per_rank, seed=seed, rank=env.rank, world_size=env.world_size,
                                augment=config.augment, with_masks=with_masks, device=env.device)

        options = runs.to_jsonable(config)
        options["resolved"] = {"store": str(store.path), "num_classes": recipe.num_classes, "world_size": env.world_size,
                               "device": str(env.device), "class_names": list(store.class_names),
                               **(recipe.resolved_options() if hasattr(recipe, "resolved_options") else {})}
        render = getattr(recipe, "render_grid", None)
        reals = None if render else (lambda: runs.from_uint8(store.images(config.resolution)[: config.loop.grid_size]))
        return gan_loop.train(recipe, config.loop, options, batches, env, reals, render)
    finally:
        shutdown_distributed()


# ---------------------------------------------------------------------------------------------
# A run's configuration, read back.


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """``config`` with fields set from a flat mapping; a dotted key (``loop.total_kimg``,
    ``schedule.lr_base``) sets a field of a nested dataclass. An unknown name is a ValueError."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[key] = value
    names = {field.name for field in dataclasses.fields(config)}
    unknown = sorted((set(top) | set(nested)) - names)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no option {', '.join(unknown)}")
    for head, values in nested.items():
        inner = getattr(config, head)
        if not dataclasses.is_dataclass(inner):
            raise ValueError(f"{type(config).__name__}.{head} has no nested options")
        top[head] = apply_overrides(inner, values)
    return dataclasses.replace(config, **top)


def load_run_config(run_or_snapshot: str | os.PathLike, config_class: type[Config],
                    overrides: Mapping[str, Any] | None = None) -> Config:
    """The ``config_class`` a run was started with (its ``training_options.json`` without
    ``resolved``), passed through ``config_class.upgrade_options`` when the class has one (older
    shapes of the file), then ``overrides`` (see :func:`apply_overrides`)."""
    run_dir, _ = runs.resolve_resume(run_or_snapshot)
    options = runs.read_options(run_dir)
    options.pop("resolved", None)
    upgrade = getattr(config_class, "upgrade_options", None)
    try:
        config = config_class(**(upgrade(options) if upgrade else options))
    except (TypeError, ValueError) as error:
        raise runs.ResumeError(f"{run_dir / runs.OPTIONS_NAME}: not a {config_class.__name__} options file "
                               f"({error})") from None
    return apply_overrides(config, overrides or {})


__all__ = ["DataConfig", "TrainerConfig", "open_data", "train", "apply_overrides", "load_run_config"]
