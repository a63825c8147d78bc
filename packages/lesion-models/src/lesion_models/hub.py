"""The save/load boundary of every model: ``config.json`` + ``model.safetensors``, nothing pickled.

A model class is a ``torch.nn.Module`` with a dataclass ``config`` and the :class:`Pretrained`
mixin; ``@register`` makes :func:`load_pretrained` able to rebuild it from a directory alone, so a
project that installs only lesion-models can load any trained network.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import types
import typing
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

MODEL_REGISTRY: dict[str, type[Pretrained]] = {}


class PretrainedLoadError(RuntimeError):
    """A model directory that is missing, incomplete, corrupt or of an unknown model type."""


def register(cls: type[Pretrained]) -> type[Pretrained]:
    """Class decorator: make ``cls`` loadable by :func:`load_pretrained` under its class name."""
    MODEL_REGISTRY[cls.__name__] = cls
    return cls


def _conforms(value: typing.Any, hint: typing.Any) -> bool:
    """Whether a JSON value fits a config annotation (the types our configs use, generically)."""
    if hint is typing.Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
        return not args or all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(_conforms(v, args[1]) for v in value.values()))
    if hint is type(None):
        return value is None
    if hint is float:  # JSON writes 2.0 as 2.0 but people write 2
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: typing.Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def config_from_dict(config_class: type, data: dict, source: str | os.PathLike | None = None) -> typing.Any:
    """Rebuild a config dataclass from JSON data, every value checked against the field's annotation
    first (a one-line PretrainedLoadError naming ``source`` and the field, never a TypeError from
    inside the model). JSON has no tuples, so tuple fields are restored. A field missing from the
    file takes its default (files saved before the field existed still load); a field without a
    default must be present."""
    where = f"{source}: " if source is not None else ""
    if not isinstance(data, dict):
        raise PretrainedLoadError(f"{where}\"config\" is a {type(data).__name__}, not an object")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PretrainedLoadError(f"{where}{config_class.__name__}: unknown config keys {unknown}")
    required = sorted(name for name, f in fields.items() if name not in data and f.init
                      and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if required:
        raise PretrainedLoadError(f"{where}{config_class.__name__}: missing config keys {required}")
    hints = typing.get_type_hints(config_class)
    values = {}
    for name, value in data.items():
        hint = hints.get(name, typing.Any)
        if not _conforms(value, hint):
            raise PretrainedLoadError(f"{where}{config_class.__name__}.{name} is {json.dumps(value)[:60]}, "
                                      f"expected {_type_name(hint)}")
        if isinstance(value, list) and typing.get_origin(hint) is tuple:
            value = tuple(value)
        values[name] = value
    try:
        return config_class(**values)
    except (TypeError, ValueError) as error:  # the config's own range checks (__post_init__)
        raise PretrainedLoadError(f"{where}{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def torch_load_problem(error: BaseException) -> str:
    """One line describing why ``torch.load(..., weights_only=True)`` failed. PyTorch's own message
    for a file holding arbitrary Python objects advises retrying with ``weights_only=False``, which
    would run whatever code the file carries; that advice is never passed on."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        return ("holds Python objects other than tensors and plain data"
                + (f" ({found.group(1)})" if found else "") + "; refused, nothing in it was run")
    return f"unreadable or truncated ({type(error).__name__}: {text.splitlines()[0] if text else ''})"


def replace_directory(tmp: Path, final: Path) -> None:
    """Put a completely written ``tmp`` at ``final``; an existing ``final`` survives until then."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old)


class Pretrained:
    """Mixin for ``nn.Module`` subclasses whose ``__init__`` takes a single config dataclass."""

    config_class: typing.ClassVar[type]
    config: typing.Any

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` under a temporary name, then rename."""
        final = Path(directory)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        payload = {
            "model_type": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")
        # save_model (not save_file) because tied/shared tensors are legal in our modules.
        save_model(self, str(tmp / WEIGHTS_NAME), metadata={"model_type": type(self).__name__})
        replace_directory(tmp, final)
        return final

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu"):
        """Rebuild the model from ``directory`` alone; the saved type must be ``cls`` or a subclass."""
        model_type, config = _read_config(Path(directory))
        model_cls = MODEL_REGISTRY.get(model_type)
        if model_cls is None or not issubclass(model_cls, cls):
            raise PretrainedLoadError(f"{directory}: holds a {model_type}, not a {cls.__name__}")
        return _instantiate(model_cls, config, Path(directory), device)


def _read_config(directory: Path) -> tuple[str, dict]:
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise PretrainedLoadError(f"{config_path}: missing (not a saved model directory)")
    try:
        payload = json.loads(config_path.read_text())
        model_type, config = payload["model_type"], payload["config"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise PretrainedLoadError(f"{config_path}: not a lesion-models config ({error})") from None
    if not isinstance(model_type, str):
        raise PretrainedLoadError(f"{config_path}: model_type is {json.dumps(model_type)[:60]}, expected a class name")
    return model_type, config


def _instantiate(model_cls: type, config: dict, directory: Path, device) -> torch.nn.Module:
    model = model_cls(config_from_dict(model_cls.config_class, config, directory / CONFIG_NAME))
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise PretrainedLoadError(f"{weights}: missing")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise PretrainedLoadError(f"{weights}: unreadable or truncated ({error})") from None
    if missing or unexpected:
        raise PretrainedLoadError(
            f"{weights}: does not match {model_cls.__name__} (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    return model.to(device).eval()


def load_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load any registered model from a directory written by ``save_pretrained``."""
    directory = Path(directory)
    model_type, config = _read_config(directory)
    # Complete because lesion_models/__init__.py imports every model file, and they register.
    model_cls = MODEL_REGISTRY.get(model_type)
    if model_cls is None:
        raise PretrainedLoadError(f"{directory / CONFIG_NAME}: unknown model type {model_type!r}")
    return _instantiate(model_cls, config, directory, device)
