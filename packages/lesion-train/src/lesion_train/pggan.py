"""Progressive GAN training (Karras et al. 2018) on top of the generic driver in ``gan_loop``.

This module holds only what is PGGAN-specific: the progressive schedule (``PGGANSchedule``, the
official ``TrainingSchedule``), the presets, and the G/D step (``PGGANRecipe``). Everything else
(ticks, logs, grids, snapshots, resume, DDP, the NaN guard) is ``lesion_train.gan_loop``.

Official defaults kept (tkarras/progressive_growing_of_gans, config ``preset-v2-1gpu``):
stabilise 600 kimg + fade 600 kimg per resolution, minibatch {4: 128, 8: 128, 16: 128, 32: 64,
64: 32, 128: 16, 256: 8, 512: 4} else 4, capped per GPU at {256: 16, 512: 8, 1024: 4} (fp32),
lr 0.001 (0.0015 at 1024), Adam(0, 0.99, 1e-8) reset whenever the level of detail crosses an
integer (start and end of every fade), reals blended across the transition, G EMA 0.999 per step,
minibatch_repeats 4, D_repeats 1, WGAN-GP lambda 10 target 1 drift 0.001, AC-GAN weight 1, ticks of
{4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 20, 1024: 10} kimg, a snapshot
every 10 ticks, 12000 kimg in total. On 2, 4 or 8 GPUs the ``gpu`` preset takes the minibatch and
learning-rate tables of ``preset-v2-2gpus``/``-4gpus``/``-8gpus`` instead (``OFFICIAL_V2``).

Deviations (also in docs/pggan.md): the EMA is updated after each G step rather than alongside
each D step (the same average, one step later); augmentation defaults to random flips/90-degree
rotations (dermoscopy has no canonical orientation; the official default is no mirroring); the
``cpu`` preset is ours: narrow networks, short phases, larger learning rate and faster EMA, so a
32 px model trains in minutes on two cores.
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
import torch.nn.functional as F
from lesion_data.store import StoreError
from lesion_metrics.losses import adversarial
from lesion_models.pggan import PGGANConfig, PGGANDiscriminator, PGGANGenerator

from lesion_train import gan_loop, setup
from lesion_train.distributed import DistEnv, autocast, grad_scaler, reuse_freed_memory
from lesion_train.setup import apply_overrides

PRESETS = ("cpu", "gpu")
LOSSES = ("wgangp", "logistic")


def _int_keys(mapping: dict) -> dict[int, float]:
    return {int(k): v for k, v in mapping.items()}


@dataclasses.dataclass
class PGGANSchedule:
    """The official ``TrainingSchedule`` (defaults = ``preset-v2-1gpu``)."""

    initial_resolution: int = 4  # first resolution trained
    stabilize_kimg: float = 600.0  # kimg per resolution before its fade
    transition_kimg: float = 600.0  # kimg of each fade-in
    minibatch_base: int = 4  # minibatch at resolutions the minibatch table leaves out
    minibatch: dict[int, int] = dataclasses.field(
        default_factory=lambda: {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}
    )
    max_minibatch_per_gpu: dict[int, int] = dataclasses.field(default_factory=lambda: {256: 16, 512: 8, 1024: 4})
    lr_base: float = 0.001  # learning rate of G and D at resolutions the lr table leaves out
    lr: dict[int, float] = dataclasses.field(default_factory=lambda: {1024: 0.0015})
    tick_kimg_base: float = 160.0  # kimg per tick (grid + log line) at resolutions the tick table leaves out
    tick_kimg: dict[int, float] = dataclasses.field(
        default_factory=lambda: {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 20, 1024: 10}
    )

    def __post_init__(self):  # JSON turns the int keys into strings
        for name in ("minibatch", "max_minibatch_per_gpu", "lr", "tick_kimg"):
            setattr(self, name, _int_keys(getattr(self, name)))
        gan_loop.require_positive(tick_kimg=min([self.tick_kimg_base, *self.tick_kimg.values()]),
                                  minibatch_base=min([self.minibatch_base, *self.minibatch.values()]))

    def phase(self, nimg: int, final_resolution: int, world_size: int = 1) -> gan_loop.Phase:
        kimg = nimg / 1000
        duration = self.stabilize_kimg + self.transition_kimg
        index = math.floor(kimg / duration) if duration > 0 else 0
        phase_kimg = kimg - index * duration
        lod = math.log2(final_resolution) - math.floor(math.log2(self.initial_resolution)) - index
        if self.transition_kimg > 0:
            lod -= max(phase_kimg - self.stabilize_kimg, 0.0) / self.transition_kimg
        lod = max(lod, 0.0)
        resolution = 2 ** (int(math.log2(final_resolution)) - math.floor(lod))
        batch = self.minibatch.get(resolution, self.minibatch_base)
        if batch >= world_size:  # the official rounding; a smaller minibatch is left for the loop to refuse
            batch -= batch % world_size
        if resolution in self.max_minibatch_per_gpu:
            batch = min(batch, self.max_minibatch_per_gpu[resolution] * world_size)
        lr = self.lr.get(resolution, self.lr_base)
        return gan_loop.Phase(
            resolution=resolution,
            batch_size=batch,
            tick_kimg=self.tick_kimg.get(resolution, self.tick_kimg_base),
            alpha=1.0 - (lod - math.floor(lod)),
            lr_g=lr,
            lr_d=lr,
            key=(math.floor(lod), math.ceil(lod)),
        )


@dataclasses.dataclass
class PGGANTrainConfig:
    """Every option of ``apps/pggan_train``; written to ``training_options.json``."""

    preset: str = "cpu"
    data: str | None = None  # prepared store or raw dataset folder; None = built-in phantoms
    phantom_count: int = 2000
    resolution: int = 32
    conditional: bool = False  # class-conditional (AC-GAN) on the store's labels
    augment: bool = True  # random flips / 90-degree rotations of the reals
    # Networks (PGGANConfig).
    fmap_base: int = 8192  # feature maps: min(fmap_base / 2^stage, fmap_max)
    fmap_max: int = 512
    z_dim: int = 512  # latent size
    mbstd_group_size: int = 4  # minibatch standard deviation group size (1: off)
    fused_scale: bool = True  # official D block order: activation after the downscale (PGGANConfig)
    # Losses.
    loss: str = "wgangp"  # wgangp (official) | logistic (non-saturating + R1)
    gp_lambda: float = 10.0  # WGAN-GP gradient penalty weight
    gp_target: float = 1.0
    drift: float = 0.001  # weight of D's squared output on reals (epsilon drift)
    r1_gamma: float = 10.0  # R1 weight for --loss logistic
    cond_weight: float = 1.0  # AC-GAN class loss weight
    # Optimisation.
    adam_beta1: float = 0.0
    adam_beta2: float = 0.99
    adam_eps: float = 1e-8
    reset_optimizer: bool = True
    g_ema_beta: float = 0.999  # generator EMA per step
    g_ema_rampup: bool = False  # beta_t = min(beta, (1 + t) / (10 + t)), as TF's ExponentialMovingAverage
    # Pays on CUDA and, on the CPU, for the `cpu` preset (32 px step 556 -> 500 ms) and the official
    # widths at 128 px (5%); below 128 px the official widths' faster layout depends on the CPU's
    # oneDNN kernels (NCHW up to 1.27x faster at 8 px on some AVX-512 CPUs).
    channels_last: bool = True
    fused_adam: bool = True  # one fused kernel per optimizer step instead of ~10 passes over the weights
    # torch.compile (inductor) for G. Off by default: on a CPU it pays only at 8 px (1.25x per step), and
    # short runs spend more time compiling than they save (docs/pggan.md).
    # D stays eager: its gradient penalty (and R1) needs double backward, which compiled graphs lack.
    compile: bool = False
    schedule: PGGANSchedule = dataclasses.field(default_factory=PGGANSchedule)
    loop: gan_loop.LoopConfig = dataclasses.field(default_factory=lambda: gan_loop.LoopConfig(name="pggan"))

    def __post_init__(self):
        if isinstance(self.schedule, dict):
            self.schedule = PGGANSchedule(**self.schedule)
        if isinstance(self.loop, dict):
            self.loop = gan_loop.LoopConfig(**self.loop)
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of {PRESETS}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {LOSSES}")

    def network_config(self, num_classes: int) -> PGGANConfig:
        return PGGANConfig(
            resolution=self.resolution, num_classes=num_classes, fmap_base=self.fmap_base,
            fmap_max=self.fmap_max, z_dim=self.z_dim, mbstd_group_size=self.mbstd_group_size,
            fused_scale=self.fused_scale,
        )


# The official preset-v2-{1,2,4,8}gpu(s) tables, by device count: (minibatch_base, minibatch, lr).
# Only the minibatch and the learning rates change with the device count; all else is shared.
OFFICIAL_V2 = {
    1: (4, {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}, {1024: 0.0015}),
    2: (8, {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}, {512: 0.0015, 1024: 0.002}),
    4: (16, {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16}, {256: 0.0015, 512: 0.002, 1024: 0.003}),
    8: (32, {4: 512, 8: 256, 16: 128, 32: 64, 64: 32}, {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}),
}


def official_schedule(devices: int = 1) -> PGGANSchedule:
    """The official v2 schedule for ``devices`` GPUs: the preset of the largest count (1, 2, 4 or 8)
    not above it; the per-step rounding to the actual count is the official one (``phase``)."""
    minibatch_base, minibatch, lr = OFFICIAL_V2[max(n for n in OFFICIAL_V2 if n <= max(devices, 1))]
    return PGGANSchedule(minibatch_base=minibatch_base, minibatch=dict(minibatch), lr=dict(lr))


def preset(name: str = "cpu", devices: int = 1, **overrides) -> PGGANTrainConfig:
    """``gpu``: the official v2 networks and schedule for ``devices`` GPUs (preset-v2-1gpu ...
    -8gpus). ``cpu``: a narrow model and short phases that train a 32 px phantom model in a few
    minutes on two cores (see docs/pggan.md)."""
    if name == "gpu":
        config = PGGANTrainConfig(preset="gpu", resolution=256, schedule=official_schedule(devices),
                                  loop=gan_loop.LoopConfig(name="pggan", total_kimg=12000))
    elif name == "cpu":
        # About 900 steps in all (the official schedule takes ~10^5), hence the larger learning
        # rate, the faster EMA with ramp-up, and starting at 8 px.
        config = PGGANTrainConfig(
            preset="cpu",
            resolution=32,
            fmap_base=512,
            fmap_max=64,
            z_dim=64,
            g_ema_beta=0.99,
            g_ema_rampup=True,
            schedule=PGGANSchedule(
                initial_resolution=8,
                stabilize_kimg=3.0,
                transition_kimg=3.0,
                minibatch_base=16,
                minibatch={},
                lr_base=0.003,
                lr={},
                tick_kimg_base=1.0,
                tick_kimg={},
            ),
            # 8 px, fade + stabilise 16 px, fade in 32 px, then 2 kimg at 32 px.
            loop=gan_loop.LoopConfig(name="pggan", total_kimg=14.0, snapshot_ticks=5),
        )
    else:
        raise ValueError(f"preset {name!r} is not one of {PRESETS}")
    return apply_overrides(config, overrides)


# ---------------------------------------------------------------------------------------------
# The PGGAN step.


def blend_reals(images: torch.Tensor, alpha: float) -> torch.Tensor:
    """During a fade, reals are blended with their 2x-downscaled-then-upscaled selves, so D sees
    the same mixture of resolutions as G produces (official ``process_reals``)."""
    if alpha >= 1.0:
        return images
    low = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
    return torch.lerp(low, images, alpha)


class PGGANRecipe(gan_loop.TwoPlayerOptim):
    def __init__(self, config: PGGANTrainConfig, num_classes: int, env: DistEnv):
        self.config, self.env = config, env
        self.num_classes = num_classes
        if env.device.type == "cpu":
            reuse_freed_memory()
        net = config.network_config(num_classes)
        self.z_dim = net.z_dim
        self.G = PGGANGenerator(net).to(env.device)
        self.D = PGGANDiscriminator(net).to(env.device)
        self.G_ema = PGGANGenerator(net).to(env.device).eval()
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False)
        self.memory_format = torch.contiguous_format
        if config.channels_last:
            self.memory_format = torch.channels_last
            for model in (self.G, self.D, self.G_ema):
                model.to(memory_format=torch.channels_last)
        self.models = {"G_ema": self.G_ema, "G": self.G, "D": self.D}
        # The steps call G through this; ``models`` keeps the plain modules for snapshots and grids.
        self.G_train = torch.compile(self.G) if config.compile else self.G
        self.scaler_g = grad_scaler(env.device, config.loop.amp)
        self.scaler_d = grad_scaler(env.device, config.loop.amp)
        self.opt_g = self.opt_d = None
        self.opt_key: tuple | None = None
        self.ema_steps = 0
        self._reset_optimizers()

    def _reset_optimizers(self) -> None:
        c = self.config
        kwargs = dict(lr=c.schedule.lr_base, betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_eps,
                      fused=c.fused_adam or None)
        self.opt_g = torch.optim.Adam(self.G.parameters(), **kwargs)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **kwargs)

    def phase(self, nimg: int) -> gan_loop.Phase:
        return self.config.schedule.phase(nimg, self.config.resolution, self.env.world_size)

    def enter_phase(self, phase: gan_loop.Phase) -> None:
        if self.config.compile and phase.resolution != self.G.resolution:
            # Up to four graphs per resolution (fading or not, with or without grad); dropping the
            # previous resolution's keeps the count under dynamo's recompile limit (8 per function).
            torch._dynamo.reset()
        if phase.key != self.opt_key:
            if self.opt_key is not None and self.config.reset_optimizer:
                self._reset_optimizers()
            self.opt_key = phase.key
        for model in self.models.values():
            model.set_stage(phase.resolution, phase.alpha)
        for group in self.opt_g.param_groups:
            group["lr"] = phase.lr_g
        for group in self.opt_d.param_groups:
            group["lr"] = phase.lr_d

    def _latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, device=self.env.device)

    def train_step(self, batch: dict[str, torch.Tensor], phase: gan_loop.Phase) -> dict[str, torch.Tensor]:
        c, amp, device = self.config, self.config.loop.amp, self.env.device
        reals = blend_reals(batch["images"], phase.alpha).contiguous(memory_format=self.memory_format)
        labels = None
        if self.num_classes:
            labels = batch["labels"]
            if not labels.is_meta and bool((labels < 0).any()):  # meta: shapes only (lesion_train.plan)
                raise StoreError("conditional training needs a label for every image; the store has unknown (-1) labels")
        n = reals.shape[0]

        # D step: fakes need no graph into G.
        self.D.requires_grad_(True)
        with torch.no_grad(), autocast(device, amp):
            fakes = self.G_train(self._latents(n), labels)
        with autocast(device, amp):
            if c.loss == "wgangp":
                d_loss, d_terms = adversarial.wgan_gp_d_loss(
                    self.D, reals, fakes, labels, gp_lambda=c.gp_lambda, gp_target=c.gp_target,
                    drift=c.drift, cond_weight=c.cond_weight,
                )
            else:
                d_loss, d_terms = adversarial.logistic_d_loss(
                    self.D, reals, fakes, labels, r1_gamma=c.r1_gamma, cond_weight=c.cond_weight
                )
        self._step(d_loss, self.opt_d, self.scaler_d, self.D)

        # G step: D's weights are frozen so their gradients are not computed.
        self.D.requires_grad_(False)
        g_loss_fn = adversarial.wgan_g_loss if c.loss == "wgangp" else adversarial.logistic_g_loss
        with autocast(device, amp):
            g_loss, g_terms = g_loss_fn(self.D, self.G_train(self._latents(n), labels), labels, cond_weight=c.cond_weight)
        self._step(g_loss, self.opt_g, self.scaler_g, self.G)
        self.D.requires_grad_(True)

        beta = c.g_ema_beta
        if c.g_ema_rampup:
            beta = min(beta, (1 + self.ema_steps) / (10 + self.ema_steps))
        self.ema_steps += 1
        with torch.no_grad():
            torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1.0 - beta)
        return {**d_terms, **g_terms}

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "opt_key": list(self.opt_key) if self.opt_key is not None else None,
            "ema_steps": self.ema_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.opt_key = tuple(state["opt_key"]) if state["opt_key"] is not None else None
        self.ema_steps = int(state["ema_steps"])


# ---------------------------------------------------------------------------------------------
# The entry point.


def train_pggan(config: PGGANTrainConfig) -> gan_loop.RunResult:
    """Build everything from ``config`` and run the progressive loop (single process or torchrun)."""

    def build(store, env: DistEnv) -> PGGANRecipe:
        return PGGANRecipe(config, len(store.class_names) if config.conditional else 0, env)

    return setup.train(config, build)


def load_run_config(run_or_snapshot: str | os.PathLike) -> PGGANTrainConfig:
    """The config a PGGAN run was started with (for ``--resume``)."""
    return setup.load_run_config(run_or_snapshot, PGGANTrainConfig)


__all__ = ["PGGANSchedule", "PGGANTrainConfig", "PGGANRecipe", "preset", "apply_overrides", "train_pggan",
           "load_run_config", "blend_reals", "PRESETS", "LOSSES"]
