"""DCGAN and LAPGAN training: the baselines of the unconditional comparison, on the generic driver
(``lesion_train.gan_loop``) and the shared store/data/grid setup (``lesion_train.setup``).

Only the G/D steps and the optimiser schedules live here. Published defaults kept: DCGAN (Radford
et al. 2016) Adam lr 2e-4, beta1 0.5, minibatch 128, non-saturating loss, no weight averaging;
LAPGAN (Denton et al. 2015) every pyramid level an independent GAN trained on the real Laplacian
pyramid (level k's generator is conditioned on the *real* coarser image, never on a generated one),
minibatch 128.

LAPGAN's optimiser is the paper's SGD (lr 0.02, momentum 0.5 -> 0.8, per-epoch decay; ``--set
lapgan.optimizer=adam`` for Adam 2e-4/0.5 like DCGAN) with the non-saturating loss. The residual
levels' SGD rate follows the minibatch (``level_lr``): the paper's 0.02 at 128 images, the same rate
per image at any other size.

Deviations (also in docs/baselines.md): all LAPGAN levels step together on one minibatch (their
losses share no parameters, so the summed loss gives each level exactly its own gradient); the
``cpu`` preset narrows the networks and uses minibatch 64 (DCGAN) and 8 (LAPGAN) so a 32 px
comparison fits in minutes on two cores, LAPGAN's coarse level keeping the rate 0.02 (16 times the
paper's rate per image: its slow start needs the updates) while the residual levels take 0.00125;
``g_ema_beta`` (default 0 = none) lets a user add PGGAN-style weight averaging for a like-for-like
comparison.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import torch
from lesion_metrics.losses import adversarial
from lesion_models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from lesion_models.lapgan import LAPGANConfig, LAPGANDiscriminator, LAPGANGenerator, up

from lesion_train import gan_loop, runs, setup
from lesion_train.distributed import DistEnv, autocast, grad_scaler, reuse_freed_memory

ARCHS = ("dcgan", "lapgan")
PRESETS = ("cpu", "gpu")
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass
class BaselineTrainConfig:
    """Every option of ``apps/pggan_train --arch dcgan|lapgan``; written to ``training_options.json``."""

    arch: str = "dcgan"
    preset: str = "gpu"
    data: str | None = None  # prepared store or raw dataset folder; None = built-in phantoms
    phantom_count: int = 2000
    resolution: int = 64
    augment: bool = True
    z_dim: int = 100  # DCGAN latent; LAPGAN coarse code (the noise planes come on top)
    ngf: int = 64  # DCGAN generator width
    ndf: int = 64  # DCGAN discriminator width
    coarse_resolution: int = 8  # LAPGAN: side of the coarsest pyramid level
    coarse_g_hidden: int = 1200  # LAPGAN: hidden units of the coarse fully connected G
    coarse_d_hidden: int = 600  # LAPGAN: hidden units of the coarse fully connected D
    level_g_features: int = 128  # LAPGAN: feature maps of each residual level's G
    level_d_features: int = 128  # LAPGAN: feature maps of each residual level's D
    batch_size: int = 128
    optimizer: str = ""  # adam | sgd; "" = the paper's: adam for DCGAN, sgd for LAPGAN
    lr: float = 0.0  # 0 = the paper's: 2e-4 (DCGAN, Adam), 0.02 (LAPGAN, SGD; its coarse level)
    level_lr: float = 0.0  # LAPGAN residual levels; 0 = with SGD lr * minibatch / 128 (the paper's rate per image), with Adam lr
    adam_beta1: float = 0.5
    adam_beta2: float = 0.999
    # LAPGAN's SGD (Denton et al. Sec. 4): momentum 0.5 rising by 0.0008 per epoch to 0.8, the rate
    # divided by (1 + 4e-5) per epoch. An epoch is counted as the official code's CIFAR-10 training
    # split (45,000 images), so the schedule does not depend on the size of the user's data set.
    momentum: float = 0.5
    epoch_kimg: float = 45.0
    g_ema_beta: float = 0.0  # 0: G_ema is a copy of G (neither paper averages weights)
    tick_kimg: float = 4.0  # kimg per tick (grid + log line)
    loop: gan_loop.LoopConfig = dataclasses.field(default_factory=lambda: gan_loop.LoopConfig(name="dcgan", total_kimg=5000))

    def __post_init__(self):
        if isinstance(self.loop, dict):
            self.loop = gan_loop.LoopConfig(**self.loop)
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not one of {ARCHS}")
        gan_loop.require_positive(tick_kimg=self.tick_kimg, batch=self.batch_size, epoch_kimg=self.epoch_kimg)
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of {PRESETS}")
        self.optimizer = self.optimizer or ("adam" if self.arch == "dcgan" else "sgd")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        self.lr = self.lr or (2e-4 if self.optimizer == "adam" else 0.02)
        # SGD's step grows with the rate per image; at a minibatch below the paper's 128 the residual
        # levels' GANs diverge at 0.02 once their discriminators start to win (docs/baselines.md).
        sgd_per_image = self.optimizer == "sgd" and self.arch == "lapgan"
        self.level_lr = self.level_lr or (self.lr * self.batch_size / 128 if sgd_per_image else self.lr)

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """A LAPGAN run from before ``level_lr`` trained every level at ``lr``, and resumes so."""
        if options.get("arch") == "lapgan" and "level_lr" not in options:
            return {**options, "level_lr": options.get("lr", 0.0)}
        return options

    def network_config(self) -> DCGANConfig | LAPGANConfig:
        if self.arch == "dcgan":
            return DCGANConfig(resolution=self.resolution, z_dim=self.z_dim, ngf=self.ngf, ndf=self.ndf)
        return LAPGANConfig(
            resolution=self.resolution, coarse_resolution=self.coarse_resolution, coarse_z_dim=self.z_dim,
            coarse_g_hidden=self.coarse_g_hidden, coarse_d_hidden=self.coarse_d_hidden,
            level_g_features=self.level_g_features, level_d_features=self.level_d_features,
        )


def sgd_schedule(config: BaselineTrainConfig, nimg: int) -> tuple[float, float]:
    """(learning rate, momentum) after ``nimg`` images: Denton et al.'s per-epoch steps."""
    epoch = int(nimg // (config.epoch_kimg * 1000))
    return config.lr / (1 + 4e-5) ** epoch, min(config.momentum + 0.0008 * epoch, 0.8)


def preset(arch: str, name: str = "cpu", **overrides) -> BaselineTrainConfig:
    """``gpu``: the published networks at 64 px. ``cpu``: narrow networks at 32 px, 14 kimg (the
    PGGAN cpu preset's length), so the three architectures see the same number of images."""
    if name == "gpu":
        config = BaselineTrainConfig(arch=arch, preset="gpu", loop=gan_loop.LoopConfig(name=arch, total_kimg=5000))
    elif name == "cpu":
        # LAPGAN's SGD needs many updates: from the official N(0, 0.005) initialisation its coarse D
        # sits at chance for ~500 steps, so at minibatch 16 (875 steps in 14 kimg) the coarse G has
        # only matched the mean image when the budget ends (near-identical samples on real data).
        # Minibatch 8 gives 1750 steps (docs/baselines.md).
        config = BaselineTrainConfig(
            arch=arch, preset="cpu", resolution=32, ngf=32, ndf=32, coarse_g_hidden=600, coarse_d_hidden=300,
            level_g_features=32, level_d_features=32, batch_size=64 if arch == "dcgan" else 8, tick_kimg=1.0,
            loop=gan_loop.LoopConfig(name=arch, total_kimg=14.0, snapshot_ticks=5),
        )
    else:
        raise ValueError(f"preset {name!r} is not one of {PRESETS}")
    return apply_overrides(config, overrides)


def apply_overrides(config: BaselineTrainConfig, overrides: dict) -> BaselineTrainConfig:
    """``setup.apply_overrides``; a new ``optimizer`` without an ``lr`` takes the paper's rate of that
    optimiser, not the preset's, and a new ``optimizer``, ``lr`` or minibatch without a ``level_lr``
    derives the levels' rate again."""
    if "optimizer" in overrides and "lr" not in overrides:
        overrides = {**overrides, "lr": 0.0}
    if {"optimizer", "lr", "batch_size"} & overrides.keys() and "level_lr" not in overrides:
        overrides = {**overrides, "level_lr": 0.0}
    return setup.apply_overrides(config, overrides)


class _Recipe(gan_loop.TwoPlayerOptim):
    """What DCGAN and LAPGAN share: G, D, G_ema, Adam, AMP scalers, a constant schedule."""

    G_class: type
    D_class: type

    def __init__(self, config: BaselineTrainConfig, env: DistEnv):
        self.config, self.env = config, env
        if env.device.type == "cpu":
            reuse_freed_memory()
        net = config.network_config()
        self.G = self.G_class(net).to(env.device)
        self.D = self.D_class(net).to(env.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.models = {"G_ema": self.G_ema, "G": self.G, "D": self.D}
        self.z_dim, self.num_classes = self.G.z_dim, 0
        groups_g, groups_d = ([{"params": params} for params, _ in self.param_groups(net)] for net in (self.G, self.D))
        self.lr_scales = [rate / config.lr for _, rate in self.param_groups(self.G)]
        if config.optimizer == "adam":
            betas = (config.adam_beta1, config.adam_beta2)
            self.opt_g = torch.optim.Adam(groups_g, lr=config.lr, betas=betas)
            self.opt_d = torch.optim.Adam(groups_d, lr=config.lr, betas=betas)
        else:
            self.opt_g = torch.optim.SGD(groups_g, lr=config.lr, momentum=config.momentum)
            self.opt_d = torch.optim.SGD(groups_d, lr=config.lr, momentum=config.momentum)
        self.scaler_g = grad_scaler(env.device, config.loop.amp)
        self.scaler_d = grad_scaler(env.device, config.loop.amp)
        self._momentum = None

    def phase(self, nimg: int) -> gan_loop.Phase:
        c, ws = self.config, self.env.world_size
        lr, self._momentum = sgd_schedule(c, nimg) if c.optimizer == "sgd" else (c.lr, None)
        return gan_loop.Phase(resolution=c.resolution, batch_size=c.batch_size - c.batch_size % ws,
                              tick_kimg=c.tick_kimg, lr_g=lr, lr_d=lr)

    def param_groups(self, net: torch.nn.Module) -> list[tuple[list[torch.nn.Parameter], float]]:
        """(parameters, base rate before the schedule) of each optimizer group of ``net``."""
        return [(list(net.parameters()), self.config.lr)]

    def enter_phase(self, phase: gan_loop.Phase) -> None:
        for optimizer in (self.opt_g, self.opt_d):
            for group, scale in zip(optimizer.param_groups, self.lr_scales, strict=True):
                group["lr"] = phase.lr_g * scale
                if self._momentum is not None:
                    group["momentum"] = self._momentum

    @torch.no_grad()
    def _update_ema(self) -> None:
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - self.config.g_ema_beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)  # batch-norm statistics follow G

    def train_step(self, batch: dict[str, torch.Tensor], phase: gan_loop.Phase) -> dict[str, torch.Tensor]:
        device, amp = self.env.device, self.config.loop.amp
        reals = batch["images"]
        with autocast(device, amp):
            critics = self.critics(reals)  # [(critic, real input, fake input with G's graph)]
            d_loss, terms = self._sum(
                adversarial.logistic_d_loss(critic, real, fake, r1_gamma=0.0) for critic, real, fake in critics
            )
        self._step(d_loss, self.opt_d, self.scaler_d, self.D)
        self.D.requires_grad_(False)  # the G step needs no D gradients
        with autocast(device, amp):
            g_loss, g_terms = self._sum(adversarial.logistic_g_loss(critic, fake) for critic, _, fake in critics)
        self._step(g_loss, self.opt_g, self.scaler_g, self.G)
        self.D.requires_grad_(True)
        self._update_ema()
        return {**terms, **g_terms}

    def _sum(self, results):
        """Total loss over levels; per-level terms keep a suffix when there is more than one level."""
        results = list(results)
        total = sum(loss for loss, _ in results)
        terms = {}
        for index, (_, level_terms) in enumerate(results):
            suffix = f"_{self.level_names[index]}" if len(results) > 1 else ""
            terms.update({f"{name}{suffix}": value for name, value in level_terms.items()})
        if len(results) > 1:
            name = "D_loss" if "D_loss" in results[0][1] else "G_loss"
            terms[name] = total.detach()
        return total, terms


class DCGANRecipe(_Recipe):
    G_class, D_class = DCGANGenerator, DCGANDiscriminator
    level_names = ()

    def critics(self, reals: torch.Tensor):
        fakes = self.G(torch.randn(reals.shape[0], self.z_dim, device=reals.device))
        return [(self.D, reals, fakes)]


class LAPGANRecipe(_Recipe):
    G_class, D_class = LAPGANGenerator, LAPGANDiscriminator

    def __init__(self, config: BaselineTrainConfig, env: DistEnv):
        super().__init__(config, env)
        self.level_names = [str(config.coarse_resolution)] + [str(r) for r in self.G.config.level_resolutions]

    def param_groups(self, net: LAPGANGenerator | LAPGANDiscriminator) -> list[tuple[list[torch.nn.Parameter], float]]:
        return [(list(net.coarse_net.parameters()), self.config.lr),
                (list(net.levels.parameters()), self.config.level_lr)]

    def load_state_dict(self, state: dict) -> None:
        """Also optimizer states saved with one group for the whole network (runs from before
        ``level_lr``): that group is split into the coarse and the level groups."""
        state = dict(state)
        for name, net in (("opt_g", self.G), ("opt_d", self.D)):
            groups = state[name]["param_groups"]
            if len(groups) == 1:
                n_coarse = len(list(net.coarse_net.parameters()))
                params = groups[0]["params"]
                state[name] = {**state[name], "param_groups": [{**groups[0], "params": params[:n_coarse]},
                                                               {**groups[0], "params": params[n_coarse:]}]}
        super().load_state_dict(state)

    def critics(self, reals: torch.Tensor):
        """One independent GAN per level: the coarse one on the coarsest Gaussian level, each finer
        one on (real residual + upsampled real coarser image) conditioned on that coarser image."""
        n, G, D = reals.shape[0], self.G, self.D
        gaussian = [reals]
        while gaussian[-1].shape[-1] > G.config.coarse_resolution:
            gaussian.append(torch.nn.functional.avg_pool2d(gaussian[-1], 2))
        gaussian = gaussian[::-1]  # coarse to fine
        code = torch.randn(n, G.config.coarse_z_dim, device=reals.device)
        critics = [(D.coarse, gaussian[0], G.coarse(code))]
        for level, (coarser, real) in enumerate(zip(gaussian[:-1], gaussian[1:])):
            condition = up(coarser)
            noise = torch.randn(n, 1, real.shape[-1], real.shape[-1], device=reals.device)
            fake = condition + G.residual(level, condition, noise)

            def critic(images, level=level, condition=condition):
                return D.level(level, images, condition)

            critics.append((critic, real, fake))
        return critics


def train_baseline(config: BaselineTrainConfig) -> gan_loop.RunResult:
    """Train a DCGAN or LAPGAN (single process or torchrun) into a run directory."""
    recipe_class = DCGANRecipe if config.arch == "dcgan" else LAPGANRecipe
    return setup.train(config, lambda store, env: recipe_class(config, env))


def run_arch(run_or_snapshot: str | os.PathLike) -> str:
    """The ``--arch`` a run was trained with (runs without one are PGGAN runs)."""
    run_dir, _ = runs.resolve_resume(run_or_snapshot)
    return runs.read_options(run_dir).get("arch", "pggan")


def load_run_config(run_or_snapshot: str | os.PathLike) -> BaselineTrainConfig:
    """The config a baseline run was started with (for ``--resume``)."""
    return setup.load_run_config(run_or_snapshot, BaselineTrainConfig)


__all__ = ["ARCHS", "PRESETS", "BaselineTrainConfig", "DCGANRecipe", "LAPGANRecipe", "preset", "apply_overrides",
           "train_baseline", "sgd_schedule", "run_arch", "load_run_config"]
