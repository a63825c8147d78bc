"""What a training run will cost, before it starts: FLOPs, memory per device and wall time per phase.

``plan(config)`` walks the configured schedule of a PGGAN, DCGAN, LAPGAN or mask2image trainer and,
for every phase (resolution, fade or stable, kimg range, batch per device, learning rate), runs the
trainer's own ``train_step`` on the **meta device** (shapes only, no memory, no arithmetic), from
the gradients and optimizer state a running job carries between steps, under a tracer that counts

- FLOPs with the formulas of ``torch.utils.flop_counter`` (the G and D forward and backward, the
  gradient penalty's or R1's double backward included), divided by the batch;
- the bytes autograd saves for backward (``saved_tensors_hooks``; parameters excluded), at most
  alive at once during the step;
- every tensor alive at once (weights, EMA copy, gradients, optimizer state, data, activations and
  temporaries; freed storages leave the count as they die): the peak per device.

Mixed precision is traced by casting the inputs of the ops autocast runs in half precision
(convolutions, matrix products) to the ``--amp`` dtype, above autograd as autocast does; the ops
autocast keeps in float32 are not singled out. Not counted: the CUDA context, cuDNN workspaces and
allocator fragmentation (``format_plan`` leaves headroom for them when it says what fits), the VGG
perceptual loss of mask2image, and data loading. ``benchmarks/plan_accuracy.py`` compares the
estimate with real CPU steps (docs/gpu.md).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from lesion_data import CLASS_NAMES
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import flop_registry

from lesion_train import baselines, gan_loop, mask2image, pggan
from lesion_train.distributed import AMP_MODES, DistEnv

GIB = 2**30
DEFAULT_UTILISATION = 0.4  # of the dense peak; GAN steps at small resolutions and batches reach less
# What fits leaves room for what the trace does not see: the CUDA context and cuDNN workspaces
# (about 0.5 GiB) and the caching allocator's fragmentation (10%).
CONTEXT_GIB = 0.5
FRAGMENTATION = 1.1
# On a CPU a training step's peak resident memory exceeds its peak of torch tensors by about this
# fraction of the activations saved for backward (CPU kernel memory that is not a torch tensor);
# fitted on benchmarks/plan_accuracy.py's cases, which it predicts to -7%..+17% (docs/gpu.md).
CPU_SAVED_OVERHEAD = 0.79


@dataclasses.dataclass(frozen=True)
class GPU:
    """A device's dense peak TFLOPS per dtype (None: no tensor-core support for it) and memory."""

    name: str
    memory_gib: float
    fp32: float
    fp16: float
    bf16: float | None

    def tflops(self, amp: str) -> float | None:
        return {"off": self.fp32, "fp16": self.fp16, "bf16": self.bf16}[amp]


# NVIDIA datasheet peaks, dense (without structured sparsity); fp16/bf16 are tensor-core figures with
# float32 accumulation, as PyTorch uses; fp32 is the non-tensor figure (TF32 convolutions, PyTorch's
# default on A100 and later, run faster).
GPUS = (
    GPU("T4", 16, 8.1, 65.0, None),
    GPU("V100 SXM2 32GB", 32, 15.7, 125.0, None),
    GPU("RTX 3090", 24, 35.6, 71.0, 71.0),
    GPU("RTX 4090", 24, 82.6, 165.2, 165.2),
    GPU("L4", 24, 30.3, 121.0, 121.0),
    GPU("A100 SXM 80GB", 80, 19.5, 312.0, 312.0),
    GPU("H100 SXM", 80, 67.0, 989.4, 989.4),
)


@dataclasses.dataclass
class PhasePlan:
    resolution: int
    kind: str  # stable | fade (PGGAN); constant | lr decay | local only (mask2image)
    kimg_start: float
    kimg_end: float
    batch_per_device: int
    lr_g: float
    lr_d: float
    flops_per_image: float  # one training image: G and D forward and backward, penalties included
    saved_bytes: int  # activations autograd holds for backward, at most at once (per device)
    weight_bytes: int  # G and D (and every other trained network)
    ema_bytes: int  # G_ema
    grad_bytes: int
    optimizer_bytes: int
    peak_bytes: int  # every tensor alive at once during a step, per device

    @property
    def kimg(self) -> float:
        return self.kimg_end - self.kimg_start

    @property
    def flops(self) -> float:
        return self.flops_per_image * self.kimg * 1000

    def needs_gib(self) -> float:
        """Device memory this phase needs, with the headroom the trace does not see."""
        return self.peak_bytes * FRAGMENTATION / GIB + CONTEXT_GIB

    @property
    def cpu_resident_bytes(self) -> float:
        """The growth of a CPU process's resident memory in this phase's steps."""
        return self.peak_bytes + CPU_SAVED_OVERHEAD * self.saved_bytes


@dataclasses.dataclass
class RunPlan:
    trainer: str  # pggan | dcgan | lapgan | mask2image-<arch>
    resolution: int
    amp: str
    world_size: int
    params: dict[str, int]  # per network
    phases: list[PhasePlan]
    notes: list[str] = dataclasses.field(default_factory=list)  # printed under the table

    @property
    def total_kimg(self) -> float:
        return sum(p.kimg for p in self.phases)

    @property
    def total_flops(self) -> float:
        return sum(p.flops for p in self.phases)

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.phases)

    def wall_seconds(self, device_tflops: float, utilisation: float = DEFAULT_UTILISATION) -> float:
        """The run on ``world_size`` devices of ``device_tflops`` each at ``utilisation`` of it."""
        return self.total_flops / (self.world_size * device_tflops * 1e12 * utilisation)

    def warnings(self, device_memory_gib: float) -> list[str]:
        """One line per phase that would not fit a device of ``device_memory_gib``."""
        return [f"{p.resolution} px {p.kind} (kimg {p.kimg_start:g}-{p.kimg_end:g}, batch {p.batch_per_device} per "
                f"device) needs ~{p.needs_gib():.1f} GiB, more than the {device_memory_gib:g} GiB given"
                for p in self.phases if p.needs_gib() > device_memory_gib]


# ---------------------------------------------------------------------------------------------
# Tracing one step.


class _StepTracer(TorchDispatchMode):
    """FLOPs of every op, and the bytes of all tensor storages alive at once (below autograd, so
    gradients, optimizer state and double-backward temporaries are all seen)."""

    def __init__(self):
        super().__init__()
        self.flops = 0
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)  # a storage keeps its Python object while alive, so ids do not collide
        if key in self._sizes:
            return
        self._sizes[key] = storage.nbytes()
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket in flop_registry:
            self.flops += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out


class _SavedForBackward:
    """``saved_tensors_hooks`` that count the storages autograd holds for backward, at most at once."""

    def __init__(self, exclude: set[int]):
        self.exclude = exclude  # parameter storages: counted as weights
        self.live = self.peak = 0
        self._refs: dict[int, list] = {}  # storage id -> [references, bytes]

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.exclude:
            return tensor
        entry = self._refs.setdefault(key, [0, storage.nbytes()])
        if entry[0] == 0:
            self.live += entry[1]
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        return _SavedRef(self, key, tensor)

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _SavedRef) else packed

    def release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= self._refs.pop(key)[1]


class _SavedRef:
    def __init__(self, owner: _SavedForBackward, key: int, tensor: torch.Tensor):
        self.owner, self.key, self.tensor = owner, key, tensor

    def __del__(self):  # autograd dropped the saved tensor (its graph was freed)
        self.owner.release(self.key)


# The ops autocast runs in the low-precision dtype on CUDA (and the CPU); traced by casting their
# floating inputs, which autograd records, so the casts' copies are saved for backward as under autocast.
_LOW_PRECISION_OPS = {
    F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.linear,
    torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.einsum,
    torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.mm, torch.Tensor.bmm,
}


class _AutocastOnMeta(TorchFunctionMode):
    """Autocast's casts for a device autocast does not cover (meta)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOW_PRECISION_OPS:
            def cast(x):
                return x.to(self.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

            args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
        return func(*args, **kwargs)


def _storage_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        seen[id(t.untyped_storage())] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    # Not the step counters: scalars, and on the CPU unless the optimizer is fused or capturable.
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor) and v.dim()]


def _prime(optimizer: torch.optim.Optimizer) -> None:
    """Gradients and optimizer state as after an earlier step (a step keeps them from one to the
    next), so the traced step is a steady-state one. Every parameter gets them, a slight excess
    where a phase leaves some unused (PGGAN's lower toRGB layers)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if all(p in optimizer.state for p in params) and all(p.grad is not None for p in params):
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    optimizer.step()


def _state_tensors(recipe) -> list[torch.Tensor]:
    """What a recipe keeps from step to step: weights, buffers, gradients, optimizer state."""
    tensors = [t for m in recipe.models.values() for t in (*m.parameters(), *m.buffers())]
    grads = [p.grad for m in recipe.models.values() for p in m.parameters() if p.grad is not None]
    return tensors + grads + [t for o in (recipe.opt_g, recipe.opt_d) for t in _optimizer_tensors(o)]


def _skip_update(*args, **kwargs) -> None:
    return None


def _trace_step(recipe, batch: dict, phase: gan_loop.Phase, amp: str) -> dict:
    """One steady-state step of ``recipe`` on the meta device: FLOPs and memory."""
    recipe.enter_phase(phase)
    optimizers = [recipe.opt_g, recipe.opt_d]
    for optimizer in optimizers:
        _prime(optimizer)
    models = recipe.models
    trained = [p for name, m in models.items() if name != "G_ema" for p in m.parameters()]
    tracer = _StepTracer()
    saved = _SavedForBackward({id(p.untyped_storage()) for m in models.values() for p in (*m.parameters(), *m.buffers())})
    for t in _state_tensors(recipe) + list(batch.values()):
        tracer.track(t)
    cast = _AutocastOnMeta(torch.bfloat16 if amp == "bf16" else torch.float16) if amp != "off" else None
    # The update itself allocates nothing that outlives it (its state is primed) and comes after
    # backward has freed the activations; tracing it would take a third of the time.
    for optimizer in optimizers:
        optimizer.step = _skip_update
    try:
        with tracer, torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack), cast or nullcontext():
            recipe.train_step(batch, phase)
    finally:
        for optimizer in optimizers:
            del optimizer.step
    n = next(iter(batch.values())).shape[0]
    return {
        "flops_per_image": tracer.flops / n,
        "saved_bytes": saved.peak,
        "weight_bytes": _storage_bytes(trained + [b for name, m in models.items() if name != "G_ema" for b in m.buffers()]),
        "ema_bytes": _storage_bytes(list(models["G_ema"].parameters())) if "G_ema" in models else 0,
        "grad_bytes": _storage_bytes([p.grad for p in trained if p.grad is not None]),
        "optimizer_bytes": _storage_bytes([t for o in optimizers for t in _optimizer_tensors(o)]),
        "peak_bytes": tracer.peak,
    }


# ---------------------------------------------------------------------------------------------
# Schedules.


def _meta_config(config, **fields):
    """``config`` for tracing: no fused kernels or compilation (neither exists on meta), AMP traced
    by ``_AutocastOnMeta`` rather than by autocast and the gradient scaler."""
    return dataclasses.replace(config, loop=dataclasses.replace(config.loop, amp="off"), **fields)


def _segments(bounds, total_kimg: float) -> list[tuple[float, float]]:
    points = sorted({0.0, total_kimg, *(b for b in bounds if 0 < b < total_kimg)})
    return list(zip(points[:-1], points[1:]))


def _pggan_phases(config: pggan.PGGANTrainConfig, world_size: int):
    """(kimg start, end, phase at the middle, kind) per stable or fade stretch of the schedule."""
    s, total = config.schedule, config.loop.total_kimg
    duration = s.stabilize_kimg + s.transition_kimg
    levels = int(math.log2(config.resolution)) - int(math.log2(s.initial_resolution))
    bounds = [i * duration + offset for i in range(levels + 1) for offset in (0.0, s.stabilize_kimg)] if duration else []
    for start, end in _segments(bounds, total):
        phase = s.phase(int((start + end) / 2 * 1000), config.resolution, world_size)
        yield start, end, phase, "fade" if phase.alpha < 1 else "stable"


def _mask2image_phases(config: mask2image.Mask2ImageConfig, trainer, total: float):
    bounds = [config.decay_start * total]
    if config.n_local_enhancers:
        bounds.append(config.fix_global_kimg)
    for start, end in _segments(bounds, total):
        middle = trainer.phase(int((start + end) / 2 * 1000))
        phase = trainer.phase(int(start * 1000))
        kind = "lr decay" if middle.lr_g < phase.lr_g or start >= config.decay_start * total else "constant"
        if not phase.key[0]:
            kind = "local only"
        yield start, end, phase, kind


def _merge(rows: list[PhasePlan]) -> list[PhasePlan]:
    """Adjacent stretches that differ only in where they start (the last level's stable part)."""
    merged: list[PhasePlan] = []
    for row in rows:
        last = merged[-1] if merged else None
        if last and (last.resolution, last.kind, last.batch_per_device, last.lr_g, last.lr_d) == (
                row.resolution, row.kind, row.batch_per_device, row.lr_g, row.lr_d):
            last.kimg_end = row.kimg_end
        else:
            merged.append(row)
    return merged


def plan(config, world_size: int = 1, num_classes: int | None = None) -> RunPlan:
    """The plan of a run of ``config`` (``PGGANTrainConfig``, ``BaselineTrainConfig`` or
    ``Mask2ImageConfig``) on ``world_size`` devices; ``num_classes`` for conditional models
    (default: the ISIC-2017 classes). Takes seconds on a CPU at 1024 px and allocates nothing."""
    if not isinstance(config, (pggan.PGGANTrainConfig, baselines.BaselineTrainConfig, mask2image.Mask2ImageConfig)):
        raise TypeError(f"no plan for {type(config).__name__}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    amp = config.loop.amp
    if amp not in AMP_MODES:
        raise ValueError(f"amp {amp!r} is not one of {AMP_MODES}")
    classes = len(CLASS_NAMES) if num_classes is None else num_classes
    notes: list[str] = []
    env = DistEnv(device=torch.device("meta"))
    meta = torch.device("meta")
    with meta:
        if isinstance(config, pggan.PGGANTrainConfig):
            name, total = "pggan", config.loop.total_kimg
            classes = classes if config.conditional else 0
            recipe = pggan.PGGANRecipe(_meta_config(config, fused_adam=False, compile=False), classes, env)
            phases = _pggan_phases(config, world_size)
        elif isinstance(config, baselines.BaselineTrainConfig):
            name, total = config.arch, config.loop.total_kimg
            recipe_class = baselines.DCGANRecipe if config.arch == "dcgan" else baselines.LAPGANRecipe
            recipe = recipe_class(_meta_config(config), env)
            phase = dataclasses.replace(recipe.phase(0), batch_size=config.batch_size - config.batch_size % world_size)
            phases = [(0.0, total, phase, "constant")]
            if config.arch == "lapgan" and config.level_lr != config.lr:
                notes.append(f"lr G/D is the coarse level's; the residual levels train at {config.level_lr:g} "
                             "(level_lr), on the same schedule")
        else:
            name, total = f"mask2image-{config.arch}", config.loop.total_kimg
            recipe = mask2image.Mask2ImageTrainer(
                _meta_config(config, compile=False, vgg_weights=None, init_global=None), classes, env)
            phases = _mask2image_phases(config, recipe, total)
        rows = []
        for start, end, phase, kind in phases:
            per_device = gan_loop.per_device_batch(phase, world_size)
            res = phase.resolution
            batch = {"images": torch.empty(per_device, 3, res, res)}
            if isinstance(config, mask2image.Mask2ImageConfig):
                batch["masks"] = torch.empty(per_device, 1, res, res)
            if isinstance(config, mask2image.Mask2ImageConfig) or getattr(recipe, "num_classes", 0):
                batch["labels"] = torch.zeros(per_device, dtype=torch.long)
            traced = _trace_step(recipe, batch, phase, amp)
            if world_size > 1:  # gan_loop.average_gradients all-reduces one flat copy of a network's gradients
                traced["peak_bytes"] += max(_storage_bytes([p.grad for p in m.parameters() if p.grad is not None])
                                            for m in (recipe.G, recipe.D))
            rows.append(PhasePlan(resolution=res, kind=kind, kimg_start=start, kimg_end=end, batch_per_device=per_device,
                                  lr_g=phase.lr_g, lr_d=phase.lr_d, **traced))
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in recipe.models.items() if name != "G_ema"}
    return RunPlan(trainer=name, resolution=config.resolution, amp=amp, world_size=world_size, params=params,
                   phases=_merge(rows), notes=notes)


# ---------------------------------------------------------------------------------------------
# Printing.


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def format_plan(run: RunPlan, device_tflops: float | None = None, device_memory_gib: float | None = None,
                utilisation: float = DEFAULT_UTILISATION) -> str:
    """The plan as a text table: one row per phase, the totals, wall time and what fits."""
    params = ", ".join(f"{name} {n / 1e6:.2f} M" for name, n in run.params.items())
    lines = [f"{run.trainer} {run.resolution} px, amp {run.amp}, {run.world_size} device(s); parameters: {params}",
             "memory per device in GiB: act = activations saved for backward (most at once), w = weights "
             "(+ EMA), grad, opt = optimizer state, peak = all tensors alive at once"]
    header = ("res", "phase", "kimg", "batch/dev", "lr G/D", "FLOP/img", "act", "w+ema", "grad", "opt", "peak")
    table = [header]
    for p in run.phases:
        lr = f"{p.lr_g:g}" if p.lr_g == p.lr_d else f"{p.lr_g:g}/{p.lr_d:g}"
        if p.kind == "lr decay":
            lr += " -> 0"
        table.append((str(p.resolution), p.kind, f"{p.kimg_start:g}-{p.kimg_end:g}", str(p.batch_per_device), lr,
                      _si(p.flops_per_image), _gib(p.saved_bytes), _gib(p.weight_bytes + p.ema_bytes),
                      _gib(p.grad_bytes), _gib(p.optimizer_bytes), _gib(p.peak_bytes)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.rjust(w) if i not in (1, 4) else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    lines += run.notes
    needs = max(p.needs_gib() for p in run.phases)
    lines.append(f"total: {run.total_kimg:g} kimg, {_si(run.total_flops, 'FLOP')}; largest phase needs ~{needs:.1f} GiB "
                 f"per device (peak x {FRAGMENTATION} + {CONTEXT_GIB} GiB CUDA context)")
    cpu = max(p.cpu_resident_bytes for p in run.phases) / GIB
    lines.append(f"on a CPU: ~{cpu:.2f} GiB more resident memory at the largest phase (peak + {CPU_SAVED_OVERHEAD:g} x act)")
    dtype = {"off": "fp32", "fp16": "fp16", "bf16": "bf16"}[run.amp]
    if device_tflops:
        lines.append(f"wall time at {device_tflops:g} TFLOPS x {utilisation:.0%} utilisation (assumed) x "
                     f"{run.world_size} device(s): {_duration(run.wall_seconds(device_tflops, utilisation))}")
    else:
        lines.append(f"wall time on {run.world_size} device(s) at an assumed {utilisation:.0%} of the dense {dtype} peak "
                     "(NVIDIA datasheet figures):")
        for gpu in GPUS:
            peak = gpu.tflops(run.amp)
            fits = "fits" if needs <= gpu.memory_gib else "does not fit"
            time = _duration(run.wall_seconds(peak, utilisation)) if peak else f"no {dtype} tensor cores"
            lines.append(f"  {gpu.name:<15} {f'{peak:g}' if peak else '-':>6} TFLOPS  {gpu.memory_gib:>3g} GiB "
                         f"{fits:<12}  {time}")
    if device_memory_gib:
        warnings = run.warnings(device_memory_gib)
        lines += [f"warning: {w}" for w in warnings] or [f"every phase fits {device_memory_gib:g} GiB"]
    return "\n".join(lines)


def describe(config, devices: int = 1, device_tflops: float | None = None, device_memory_gib: float | None = None) -> str:
    """``format_plan(plan(config))``: what the apps' ``--plan`` prints."""
    return format_plan(plan(config, world_size=devices), device_tflops, device_memory_gib)


__all__ = ["GPU", "GPUS", "DEFAULT_UTILISATION", "PhasePlan", "RunPlan", "plan", "format_plan", "describe"]
