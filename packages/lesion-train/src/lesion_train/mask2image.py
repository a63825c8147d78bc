"""Mask-to-image training: lesion label map (+ boundary) -> dermoscopy image.

One trainer for four architectures (``--arch``), each with its published defaults:

=========  ==========================  ======  =========================  ===============  =========
arch       generator                   GAN     extra G losses             lr G / D         betas
=========  ==========================  ======  =========================  ===============  =========
ours       pix2pixHD + fusion + feats  lsgan   FM 10 (4/(n+1), 1/num_D)   2e-4 / 2e-4      0.5 0.999
pix2pixhd  pix2pixHD global            lsgan   FM 10 (4/(n+1), 1/num_D)   2e-4 / 2e-4      0.5 0.999
pix2pix    U-Net (dropout)             BCE     L1 100                     2e-4 / 2e-4      0.5 0.999
spade      SPADE ResNet, spectral D    hinge   FM 10 (1, 1/num_D)         1e-4 / 4e-4      0   0.9
=========  ==========================  ======  =========================  ===============  =========

Every arch adds the VGG19 perceptual loss (lambda 10) only when ``vgg_weights`` names a local file.
The learning rate is constant for the first ``decay_start`` (0.5) of training and decays linearly
to zero over the rest (pix2pixHD's niter/niter_decay; counted in images instead of epochs).
Order of a step as pix2pixHD: D(real) once, G step (GAN + FM against the detached real features),
then D step on the detached fake. pix2pixHD/pix2pix halve the D loss, SPADE does not.

Per-architecture knowledge (published defaults, networks, local enhancer, SyncBatchNorm) is one
table, ``ARCH_SPECS``. The trainer is a ``gan_loop`` recipe set up by ``lesion_train.setup``, so
runs are driven as PGGAN's (options JSON with the shared ``loop`` options, JSONL log, a grid of label map | real | synthesized every tick, atomic snapshots ``G/`` and ``D/`` +
``training_state.pt``, exact ``--resume``, torchrun with one gradient all-reduce per network and
step); each step is its own phase, so the learning rate decays step by step.

Deviations: pix2pixHD's batch size is 1 (we default to 8 for throughput; instance norm makes the
result per-image anyway); "ours" enables the instance feature encoder (feat_num 3) so that
``--variations`` works, and upsamples by resize-conv instead of transposed convolutions (no
checkerboard; ``upsample``, docs/mask2image.md); the CPU demo profile (no ``--data``) narrows the networks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from lesion_data.labelmap import boundary_map, label_map, one_hot_label_map
from lesion_metrics.losses import translation as losses
from lesion_models.pix2pix import UNetGenerator, UNetGeneratorConfig, patchgan70_config
from lesion_models.pix2pixhd import (
    UPSAMPLE_MODES,
    DiscriminatorConfig,
    MultiscaleDiscriminator,
    Pix2PixHDConfig,
    Pix2PixHDGenerator,
)
from lesion_models.spade import SPADEGenerator, SPADEGeneratorConfig, spade_discriminator_config

from lesion_train import gan_loop, runs, setup
from lesion_train.distributed import DistEnv, autocast, grad_scaler, reuse_freed_memory
from lesion_train.gan_loop import TwoPlayerOptim


@dataclasses.dataclass(frozen=True)
class ArchDefaults:
    """An architecture's published losses and optimiser (options left unset take these)."""

    gan_mode: str
    lambda_feat: float
    layer_weight: float | None  # None: pix2pixHD's 4 / (n_layers + 1)
    scales: str  # how per-scale GAN losses combine
    lambda_l1: float
    lr_g: float
    lr_d: float
    betas: tuple[float, float]
    d_loss_scale: float
    feat_num: int  # pix2pixHD's instance feature encoder channels (0 = none)
    upsample: str | None = None  # pix2pixHD decoders: "transpose" (NVIDIA's) or "resize"; None: no choice


def _pix2pixhd_networks(config: Mask2ImageConfig, label_nc: int, fusion: bool):
    G = Pix2PixHDGenerator(Pix2PixHDConfig(
        label_nc=label_nc, ngf=config.ngf, n_blocks=config.n_blocks, fusion=fusion,
        n_local_enhancers=config.n_local_enhancers, feat_num=config.resolved("feat_num"),
        upsample=config.resolved("upsample")))
    d_config = DiscriminatorConfig(input_nc=label_nc + 1 + 3, ndf=config.ndf, n_layers=config.n_layers_d,
                                   num_D=config.num_d or (3 if config.resolution >= 1024 else 2))
    return G, d_config


def _pix2pix_networks(config: Mask2ImageConfig, label_nc: int):
    G = UNetGenerator(UNetGeneratorConfig(label_nc=label_nc, ngf=config.ngf, num_downs=int(math.log2(config.resolution))))
    return G, patchgan70_config(label_nc + 1 + 3, ndf=config.ndf)


def _spade_networks(config: Mask2ImageConfig, label_nc: int):
    d_config = spade_discriminator_config(label_nc + 1 + 3, ndf=config.ndf)
    d_config.num_D = config.num_d or d_config.num_D
    return SPADEGenerator(SPADEGeneratorConfig(label_nc=label_nc, nf=config.ngf)), d_config


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """Everything the trainer knows about one ``--arch``."""

    defaults: ArchDefaults
    # (config, label channels) -> (generator, discriminator config)
    networks: Callable[[Mask2ImageConfig, int], tuple[torch.nn.Module, DiscriminatorConfig]]
    local_enhancer: bool = False  # pix2pixHD's local enhancer and its two-stage training exist
    sync_batchnorm: bool = False  # batch norms become SyncBatchNorm under torchrun


ARCH_SPECS = {
    "ours": ArchSpec(ArchDefaults("lsgan", 10.0, None, "sum", 0.0, 2e-4, 2e-4, (0.5, 0.999), 0.5, feat_num=3,
                                   upsample="resize"),
                     functools.partial(_pix2pixhd_networks, fusion=True), local_enhancer=True),
    "pix2pixhd": ArchSpec(ArchDefaults("lsgan", 10.0, None, "sum", 0.0, 2e-4, 2e-4, (0.5, 0.999), 0.5, feat_num=0,
                                        upsample="transpose"),
                          functools.partial(_pix2pixhd_networks, fusion=False), local_enhancer=True),
    "pix2pix": ArchSpec(ArchDefaults("vanilla", 0.0, None, "sum", 100.0, 2e-4, 2e-4, (0.5, 0.999), 0.5, feat_num=0),
                        _pix2pix_networks),
    "spade": ArchSpec(ArchDefaults("hinge", 10.0, 1.0, "mean", 0.0, 1e-4, 4e-4, (0.0, 0.9), 1.0, feat_num=0),
                      _spade_networks, sync_batchnorm=True),
}
ARCHS = tuple(ARCH_SPECS)


@dataclasses.dataclass
class Mask2ImageConfig:
    arch: str = "ours"
    data: str | None = None  # prepared store or raw dataset folder; None = built-in phantoms
    phantom_count: int = 2000
    resolution: int = 256
    batch_size: int = 8  # global, over all ranks
    decay_start: float = 0.5  # fraction of training after which the lr decays linearly to 0
    augment: bool = True  # dihedral flips/rotations of image and mask together
    # Networks (faithful defaults; None = per-arch default).
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    n_layers_d: int = 3
    num_d: int | None = None  # 2, or 3 at 1024 px
    feat_num: int | None = None  # ours: 3, others: 0 (ARCH_SPECS)
    n_local_enhancers: int = 0
    upsample: str | None = None  # pix2pixHD decoders: ours "resize", pix2pixhd "transpose" (NVIDIA's) (ARCH_SPECS)
    init_global: str | None = None  # a trained global Pix2PixHDGenerator dir for the local enhancer
    fix_global_kimg: float = 0.0  # train only the local enhancer this long first (pix2pixHD niter_fix_global)
    # Losses / optimisation (None = per-arch default from ARCH_SPECS).
    gan_mode: str | None = None
    lambda_feat: float | None = None
    lambda_l1: float | None = None
    vgg_weights: str | None = None
    lambda_vgg: float = 10.0
    lr_g: float | None = None
    lr_d: float | None = None
    tick_kimg: float = 4.0
    compile: bool = False  # torch.compile G and D (inductor), for CUDA; on a CPU it makes the step 2x slower
    # Each step is its own phase (minibatch_repeats 1), so the learning rate decays step by step;
    # an empty name becomes mask2image-<arch>; grids show ``grid_size`` label maps.
    loop: gan_loop.LoopConfig = dataclasses.field(default_factory=lambda: gan_loop.LoopConfig(
        name="", total_kimg=200.0, minibatch_repeats=1, snapshot_ticks=5, grid_size=8))

    def __post_init__(self):
        if isinstance(self.loop, dict):
            self.loop = gan_loop.LoopConfig(**self.loop)
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not one of {ARCHS}")
        gan_loop.require_positive(tick_kimg=self.tick_kimg, batch=self.batch_size)
        if self.resolution < 32 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution {self.resolution} must be a power of two >= 32")
        if self.n_local_enhancers and not ARCH_SPECS[self.arch].local_enhancer:
            with_enhancer = "|".join(name for name, spec in ARCH_SPECS.items() if spec.local_enhancer)
            raise ValueError(f"the local enhancer exists for --arch {with_enhancer} only")
        if self.upsample is not None and (ARCH_SPECS[self.arch].defaults.upsample is None
                                          or self.upsample not in UPSAMPLE_MODES):
            with_choice = "|".join(name for name, spec in ARCH_SPECS.items() if spec.defaults.upsample)
            raise ValueError(f"--upsample {self.upsample!r}: one of {UPSAMPLE_MODES}, for --arch {with_choice} only")

    def resolved(self, name: str):
        """Option ``name``, or the arch's published default when unset."""
        value = getattr(self, name, None)
        return getattr(ARCH_SPECS[self.arch].defaults, name) if value is None else value

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """Older shapes of a run's options: run fields before the nested ``loop`` move into it, and a
        pix2pixHD-family run from before ``upsample`` keeps the transposed convolutions it trained with."""
        options = dict(options)
        if options.get("arch") in ("ours", "pix2pixhd"):
            options.setdefault("upsample", "transpose")
        if "loop" in options:
            return options
        loop = {new: options.pop(old) for old, new in _FLAT_LOOP_FIELDS.items() if old in options}
        loop["cpu_threads"] = loop.get("cpu_threads") or 0  # None was torch's default; 0 = idle cores
        loop["name"] = loop.get("name") or ""
        return {**options, "loop": {"minibatch_repeats": 1, **loop}}


# The flat run fields of older Mask2ImageConfig options -> their LoopConfig names.
_FLAT_LOOP_FIELDS = {"total_kimg": "total_kimg", "snapshot_ticks": "snapshot_ticks", "grid_size": "grid_size",
                     "seed": "seed", "device": "device", "amp": "amp", "threads": "cpu_threads",
                     "run_root": "run_root", "name": "name", "resume": "resume"}


def demo_overrides() -> dict:
    """The no-argument CPU demo: 64 px phantoms, narrow networks, a few minutes on two cores.

    One CPU thread: these small convolutions gain little from intra-op threads, and on a shared,
    oversubscribed CPU two spinning threads ran 30x slower than one in our measurement."""
    return {"resolution": 64, "phantom_count": 1000, "batch_size": 4, "ngf": 16, "ndf": 16, "n_blocks": 3,
            "tick_kimg": 0.2, "loop.total_kimg": 0.8, "loop.snapshot_ticks": 2, "loop.cpu_threads": 1}


# ---------------------------------------------------------------------------------------------
# Networks and inputs.


def build_networks(config: Mask2ImageConfig, num_classes: int) -> tuple[torch.nn.Module, MultiscaleDiscriminator]:
    G, d_config = ARCH_SPECS[config.arch].networks(config, 1 + num_classes)
    return G, MultiscaleDiscriminator(d_config)


def label_input(masks: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot label map (skin + classes) and the lesion boundary: (B, 2 + num_classes, H, W)."""
    lm = label_map(masks, labels)
    return torch.cat([one_hot_label_map(masks, labels, num_classes), boundary_map(lm)], 1)


_PALETTE = torch.tensor([[0.85, 0.75, 0.70], [0.55, 0.35, 0.2], [0.1, 0.1, 0.1], [0.8, 0.65, 0.3],
                         [0.3, 0.4, 0.8], [0.6, 0.2, 0.6], [0.2, 0.6, 0.3], [0.7, 0.2, 0.2]])


def colour_label_input(x: torch.Tensor) -> torch.Tensor:
    """Label input -> RGB in [-1, 1] for grids: one colour per label, the boundary in white."""
    onehot, edge = x[:, :-1], x[:, -1:]
    palette = _PALETTE[: onehot.shape[1]].to(x.device, x.dtype)
    rgb = torch.einsum("blhw,lc->bchw", onehot, palette)
    return torch.where(edge > 0, torch.ones_like(rgb), rgb) * 2 - 1


def triplet_grid(label_x: torch.Tensor, reals: torch.Tensor | None, fakes: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Interleave (label map | real | fake) per sample, two samples per grid row."""
    columns = [colour_label_input(label_x)] + ([reals] if reals is not None else []) + [fakes]
    tiles = torch.stack(columns, 1).flatten(0, 1)
    return tiles, 2 * len(columns)


# ---------------------------------------------------------------------------------------------
# Training.


def lr_factor(nimg: int, total_nimg: int, decay_start: float) -> float:
    """1 until ``decay_start`` of training, then linear to 0 at the end (pix2pixHD)."""
    start = decay_start * total_nimg
    if nimg <= start or total_nimg <= start:
        return 1.0
    return max(0.0, (total_nimg - nimg) / (total_nimg - start))


class Mask2ImageTrainer(TwoPlayerOptim):
    def __init__(self, config: Mask2ImageConfig, num_classes: int, env: DistEnv):
        self.config, self.num_classes, self.env = config, num_classes, env
        if env.device.type == "cpu":
            reuse_freed_memory()
        spec = ARCH_SPECS[config.arch]
        self.arch = spec.defaults
        self.G, self.D = build_networks(config, num_classes)
        if env.distributed and spec.sync_batchnorm:
            self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
        self.G.to(env.device), self.D.to(env.device)
        if config.init_global:
            self._load_global(Path(config.init_global))
        # Fused Adam: one pass over parameter, gradient and both moments instead of about ten
        # elementwise kernels per tensor. Same update up to float rounding; at 128 px batch 1 the
        # default (single-tensor) Adam over pix2pixHD's 182M parameters took half of the step.
        adam = dict(betas=self.arch.betas, fused=env.device.type in ("cpu", "cuda"))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.resolved("lr_g"), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.resolved("lr_d"), **adam)
        self.scaler_g, self.scaler_d = grad_scaler(env.device, config.loop.amp), grad_scaler(env.device, config.loop.amp)
        self.gan_mode = config.resolved("gan_mode")
        self.lambda_feat, self.lambda_l1 = config.resolved("lambda_feat"), config.resolved("lambda_l1")
        self.vgg = losses.VGGPerceptualLoss(config.vgg_weights).to(env.device) if config.vgg_weights else None
        self.models = {"G": self.G, "D": self.D}
        # The step calls the networks through these; ``models`` keeps the plain modules for snapshots.
        self.G_train, self.D_train = (torch.compile(m) if config.compile else m for m in (self.G, self.D))
        self.train_global = True
        self.grid_batch: dict[str, torch.Tensor] | None = None  # set by train_mask2image from the store
        self.bank_source: tuple | None = None  # (store, indices) the feature bank is refilled from

    def _load_global(self, directory: Path) -> None:
        """pix2pixHD's second stage: start the global part from a trained global generator."""
        if not isinstance(self.G, Pix2PixHDGenerator) or not self.G.config.n_local_enhancers:
            raise ValueError("--init-global needs --arch ours|pix2pixhd with --n-local-enhancers >= 1")
        trained = Pix2PixHDGenerator.from_pretrained(directory, self.env.device)
        try:
            self.G.global_net.load_state_dict(trained.global_net.state_dict())
            if self.G.config.feat_num:
                self.G.encoder.load_state_dict(trained.encoder.state_dict())
        except (RuntimeError, AttributeError) as error:
            raise runs.ResumeError(f"{directory}: global generator does not fit ({str(error).splitlines()[0]})") from None

    # The gan_loop recipe: one phase per step (minibatch_repeats 1) carries the decayed learning
    # rates and, as its key, whether the global generator trains (pix2pixHD's niter_fix_global).

    def phase(self, nimg: int) -> gan_loop.Phase:
        c = self.config
        factor = lr_factor(nimg, int(c.loop.total_kimg * 1000), c.decay_start)
        train_global = nimg >= c.fix_global_kimg * 1000 or not c.n_local_enhancers
        return gan_loop.Phase(resolution=c.resolution, batch_size=c.batch_size, tick_kimg=c.tick_kimg,
                              lr_g=c.resolved("lr_g") * factor, lr_d=c.resolved("lr_d") * factor, key=(train_global,))

    def enter_phase(self, phase: gan_loop.Phase) -> None:
        for opt, lr in ((self.opt_g, phase.lr_g), (self.opt_d, phase.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr
        (self.train_global,) = phase.key

    def train_step(self, batch: dict[str, torch.Tensor], phase: gan_loop.Phase) -> dict[str, torch.Tensor]:
        return self.step(batch, train_global=self.train_global)

    def render_grid(self, path: Path) -> Path:
        """label map | real | synthesized for the fixed ``grid_batch``."""
        if self.bank_source is not None:  # region features for synthesis, from the encoder of this tick
            store, indices = self.bank_source
            refill_feature_bank(self.G, store, indices, self.config.resolution, self.num_classes, self.env.device,
                                self.config.batch_size)
        return draw_grid(self.G, self.grid_batch, self.num_classes, path, self.config.loop.seed)

    def resolved_options(self) -> dict:
        return {**{f.name: getattr(self.arch, f.name) for f in dataclasses.fields(ArchDefaults)},
                "vgg_loss": "on" if self.config.vgg_weights else "off (no --vgg-weights file given)"}

    def step(self, batch: dict[str, torch.Tensor], train_global: bool = True) -> dict[str, torch.Tensor]:
        reals = batch["images"]
        x = label_input(batch["masks"], batch["labels"], self.num_classes)
        with autocast(self.env.device, self.config.loop.amp):
            fake = self.G_train(x, image=reals)
            pred_real = self.D_train(torch.cat([x, reals], 1))
            self.D.requires_grad_(False)
            pred_fake = self.D_train(torch.cat([x, fake], 1))
            self.D.requires_grad_(True)
            terms = {"G_gan": losses.gan_loss(pred_fake, True, self.gan_mode, for_discriminator=False,
                                              scales=self.arch.scales)}
            if self.lambda_feat:
                terms["G_feat"] = losses.feature_matching_loss(pred_fake, pred_real, self.lambda_feat,
                                                               self.arch.layer_weight)
            if self.lambda_l1:
                terms["G_l1"] = self.lambda_l1 * torch.nn.functional.l1_loss(fake.float(), reals.float())
            if self.vgg is not None:
                terms["G_vgg"] = self.config.lambda_vgg * self.vgg(fake, reals)
        loss_g = sum(terms.values())
        if not train_global:  # pix2pixHD's niter_fix_global: the global part stays fixed
            self.G.global_net.requires_grad_(False)
        self._step(loss_g, self.opt_g, self.scaler_g, self.G)
        if not train_global:
            self.G.global_net.requires_grad_(True)
        with autocast(self.env.device, self.config.loop.amp):
            pred_fake_d = self.D_train(torch.cat([x, fake.detach()], 1))
            d_real = losses.gan_loss(pred_real, True, self.gan_mode, scales=self.arch.scales)
            d_fake = losses.gan_loss(pred_fake_d, False, self.gan_mode, scales=self.arch.scales)
        loss_d = self.arch.d_loss_scale * (d_real + d_fake)
        self._step(loss_d, self.opt_d, self.scaler_d, self.D)
        terms.update(D_real=d_real, D_fake=d_fake)
        return {k: v.detach().float() for k, v in terms.items()}


def store_batch(store, indices, resolution: int, device) -> dict[str, torch.Tensor]:
    """Images ``indices`` (ascending) of the store, unaugmented, as a training batch."""
    images = runs.from_uint8(store.images(resolution)[indices])
    masks = torch.from_numpy(store.masks(resolution)[indices]).unsqueeze(1).float()
    labels = torch.from_numpy(store.labels[indices])
    return {"images": images.to(device), "masks": masks.to(device), "labels": labels.to(device)}


def fixed_grid_batch(store, config: Mask2ImageConfig, device) -> dict[str, torch.Tensor]:
    """The first ``loop.grid_size`` images of the store (unaugmented): the same in every tick and resume."""
    return store_batch(store, np.arange(min(config.loop.grid_size, len(store))), config.resolution, device)


def feature_bank_indices(labels: np.ndarray, size: int) -> np.ndarray:
    """A fixed, class-balanced sample for the feature bank: the first ``size`` images of each class."""
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[:size] for k in np.unique(labels)]))


@torch.no_grad()
def refill_feature_bank(G: Pix2PixHDGenerator, store, indices: np.ndarray, resolution: int, num_classes: int,
                        device, batch_size: int) -> None:
    """Empty the bank and encode the images ``indices`` with G's current encoder: every entry comes
    from the encoder that is saved with it, and each lesion class gets up to ``feature_bank_size``
    entries (the last minibatch alone holds one or two per class, and every variation of a mask
    would draw the same lesion feature)."""
    G.bank_count.zero_()
    for start in range(0, len(indices), batch_size):
        batch = store_batch(store, indices[start : start + batch_size], resolution, device)
        G.update_feature_bank(batch["images"], one_hot_label_map(batch["masks"], batch["labels"], num_classes))


@torch.no_grad()
def draw_grid(G, batch, num_classes: int, path: Path, seed: int) -> Path:
    was_training = G.training
    G.eval()
    x = label_input(batch["masks"], batch["labels"], num_classes)
    fakes = G(x, generator=torch.Generator().manual_seed(seed))
    G.train(was_training)
    tiles, ncol = triplet_grid(x, batch["images"], fakes)
    return runs.save_image_grid(tiles, path, ncol=ncol)


def train_mask2image(config: Mask2ImageConfig) -> gan_loop.RunResult:
    """Build everything from ``config`` and train through ``gan_loop`` (single process or torchrun)."""
    if not config.loop.name:
        config = setup.apply_overrides(config, {"loop.name": f"mask2image-{config.arch}"})

    def build(store, env: DistEnv) -> Mask2ImageTrainer:
        if not store.has_masks:
            raise ValueError(f"{store.path}: has no masks; mask-to-image training needs segmentation masks")
        if (store.labels < 0).any():
            raise ValueError(f"{store.path}: {(store.labels < 0).sum()} images have no diagnosis; "
                             "label maps need one for every image")
        trainer = Mask2ImageTrainer(config, len(store.class_names), env)
        trainer.grid_batch = fixed_grid_batch(store, config, env.device)
        if getattr(trainer.G.config, "feat_num", 0):
            trainer.bank_source = (store, feature_bank_indices(store.labels, trainer.G.config.feature_bank_size))
        if env.is_main and not config.vgg_weights:
            print("mask2image: VGG19 perceptual loss is off (give --vgg-weights FILE to enable it)", file=sys.stderr)
        return trainer

    return setup.train(config, build, with_masks=True)


# ---------------------------------------------------------------------------------------------
# Synthesis from mask files.

class SynthesisError(ValueError):
    """Bad synthesis input (model directory, masks, classes); the message names the file."""


@dataclasses.dataclass
class LoadedGenerator:
    G: torch.nn.Module
    resolution: int
    class_names: list[str]
    directory: Path


def load_generator(model: str | Path, resolution: int | None = None, device="cpu") -> LoadedGenerator:
    """A run directory (newest snapshot), a snapshot directory, or a generator directory."""
    from lesion_models import load_pretrained

    try:
        g_dir = runs.find_model(model, prefer=("G",))
    except runs.ResumeError as error:
        raise SynthesisError(str(error)) from None
    G = load_pretrained(g_dir, device)
    resolution = resolution or runs.run_options_of(g_dir).get("resolution")
    if not resolution:
        raise SynthesisError(f"{g_dir}: not inside a run directory; give --resolution")
    class_names = runs.class_names(g_dir)
    if G.config.label_nc != 1 + len(class_names):
        raise SynthesisError(f"{g_dir}: expects {G.config.label_nc - 1} classes, options name {class_names}")
    return LoadedGenerator(G, int(resolution), class_names, g_dir)


def read_masks(folder: str | Path, resolution: int) -> tuple[list[str], torch.Tensor]:
    """Every mask image in ``folder`` (sorted, checked by ``lesion_data.preprocess.read_mask_folder``;
    warnings go to stderr), resized (nearest) to ``resolution``: names, (N, 1, R, R) {0, 1}."""
    from lesion_data.preprocess import BadInput, read_mask_folder

    try:
        names, masks, notes = read_mask_folder(folder, resolution)
    except BadInput as error:
        raise SynthesisError(str(error)) from None
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return names, torch.from_numpy(masks).unsqueeze(1).float()


def _mask_id(stem: str) -> str:
    return stem[: -len("_segmentation")] if stem.endswith("_segmentation") else stem


def classes_from_csv(path: str | Path, names: list[str], class_names: list[str]) -> list[int]:
    """Per mask, its class from a CSV: an id column (``image_id``, ``mask`` or ``file``, matched to
    the mask file name without ``_segmentation``) and either a ``class`` column of class names or
    ISIC-2017's 0/1 columns ``melanoma`` and ``seborrheic_keratosis`` (neither = nevus)."""
    import csv

    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise SynthesisError(f"{path}: unreadable class CSV ({error})") from None
    if not rows:
        raise SynthesisError(f"{path}: empty class CSV")
    id_col = next((c for c in ("image_id", "mask", "file") if c in rows[0]), None)
    if id_col is None:
        raise SynthesisError(f"{path}: needs an image_id, mask or file column (has {list(rows[0])})")
    table = {}
    for row in rows:
        key = _mask_id(Path(row[id_col]).stem)
        if "class" in row:
            name = row["class"].strip()
        else:
            flags = [c for c in class_names[1:] if c in row and float(row[c] or 0) > 0.5]
            name = flags[0] if flags else class_names[0]
        if name not in class_names:
            raise SynthesisError(f"{path}: unknown class {name!r} for {key} (known: {class_names})")
        table[key] = class_names.index(name)
    missing = [n for n in names if _mask_id(n) not in table]
    if missing:
        raise SynthesisError(f"{path}: no class for masks {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return [table[_mask_id(n)] for n in names]


@dataclasses.dataclass
class SynthesisResult:
    out: Path
    images: torch.Tensor  # (N, 3, R, R) in [-1, 1]
    masks: torch.Tensor  # (N, 1, R, R), the input mask of each image
    labels: torch.Tensor
    files: list[Path]
    class_names: list[str]


@torch.inference_mode()  # no autograd bookkeeping at all (no version counters, no views tracking)
def synthesize(model: str | Path, masks_dir: str | Path, out: str | Path, class_name: str = "from-csv",
               csv_path: str | Path | None = None, variations: int = 1, seed: int = 0,
               resolution: int | None = None, device: str = "auto", batch_size: int = 8) -> SynthesisResult:
    """One image per mask (``variations`` per mask where the generator is stochastic) in
    ``out/images/<mask>__<class>__v<k>.png``; the masks at model resolution in ``out/masks/``, and
    ``out/synthesized.csv`` listing image, mask, class, variation."""
    import csv

    from PIL import Image

    from lesion_train.distributed import choose_device

    dev = choose_device(device)
    loaded = load_generator(model, resolution, dev)
    G, res, class_names = loaded.G, loaded.resolution, loaded.class_names
    names, masks = read_masks(masks_dir, res)
    if class_name == "from-csv":
        if csv_path is None:
            raise SynthesisError("--class from-csv needs --csv FILE")
        labels = torch.tensor(classes_from_csv(csv_path, names, class_names))
    elif class_name in class_names:
        labels = torch.full((len(names),), class_names.index(class_name))
    else:
        raise SynthesisError(f"unknown class {class_name!r} (known: {class_names} or from-csv)")
    if variations < 1:
        raise SynthesisError("--variations must be >= 1")
    if variations > 1 and not G.stochastic:
        raise SynthesisError(f"{loaded.directory}: {type(G).__name__} without a noise source is deterministic; "
                             "--variations needs --arch ours (feature encoder) or pix2pix (dropout)")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    fakes = generate(G, masks, labels, len(class_names), variations, seed, batch_size)
    files, rows = [], []
    for k, variation in enumerate(fakes):
        for name, label, array in zip(names, labels, runs.to_uint8(variation).permute(0, 2, 3, 1).numpy()):
            label = class_names[int(label)]
            file = runs.atomic_save_image(array, out / "images" / f"{name}__{label}__v{k}.png")
            files.append(file)
            rows.append({"image": f"images/{file.name}", "mask": f"masks/{name}.png", "class": label, "variation": k})
    for name, m in zip(names, masks):
        Image.fromarray((m[0].numpy() * 255).astype("uint8")).save(out / "masks" / f"{name}.png")
    with runs.atomic_path(out / "synthesized.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask", "class", "variation"])
        writer.writeheader()
        writer.writerows(rows)
    return SynthesisResult(out, fakes.flatten(0, 1), masks.repeat(variations, 1, 1, 1), labels.repeat(variations),
                           files, class_names)


@torch.inference_mode()
def generate(G, masks: torch.Tensor, labels: torch.Tensor, num_classes: int, variations: int = 1, seed: int = 0,
             batch_size: int = 8) -> torch.Tensor:
    """``variations`` images per mask (masks (N, 1, R, R) {0, 1}, labels (N,)): (variations, N, 3, R, R)
    in [-1, 1] on the CPU. Variation k is seeded by (seed, k): the feature encoder's bank draws from
    its own generator, pix2pix's dropout (on at test time, as published) from the global stream."""
    if isinstance(G, UNetGenerator):
        G.enable_dropout()
    device = next(G.parameters()).device
    out = []
    for k in range(variations):
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        torch.manual_seed(seed * 1000 + k)
        out.append(torch.cat([
            G(label_input(masks[i : i + batch_size].to(device), labels[i : i + batch_size].to(device), num_classes),
              generator=generator).float().cpu() for i in range(0, len(masks), batch_size)]))
    return torch.stack(out)


@torch.no_grad()
def class_fidelity(classifier, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict:
    """Accuracy of a lesion classifier trained on real images on synthesized ``images`` (in
    [-1, 1]) against the requested ``labels``; images are resized to the classifier's resolution."""
    from lesion_models.classifier import LesionClassifier

    if not isinstance(classifier, LesionClassifier):
        classifier = LesionClassifier.from_pretrained(classifier)
    if list(classifier.config.class_names) != list(class_names):
        raise SynthesisError(f"classifier classes {list(classifier.config.class_names)} differ from the "
                             f"generator's {class_names}")
    size = classifier.config.resolution
    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                                              align_corners=False)
    device = next(classifier.parameters()).device
    predicted = classifier.eval().predict_proba(resized.to(device), batch_size=32).argmax(1).cpu()
    hits = predicted == labels
    per_class = {name: float(hits[labels == k].float().mean()) for k, name in enumerate(class_names) if (labels == k).any()}
    return {"accuracy": float(hits.float().mean()), "per_class": per_class, "count": len(labels)}


__all__ = ["ARCHS", "ARCH_SPECS", "ArchSpec", "ArchDefaults", "Mask2ImageConfig", "Mask2ImageTrainer", "SynthesisError",
           "SynthesisResult", "build_networks", "demo_overrides", "generate", "label_input", "load_generator", "lr_factor",
           "read_masks", "classes_from_csv", "synthesize", "train_mask2image", "class_fidelity"]
