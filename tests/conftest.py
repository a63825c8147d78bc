"""Fixtures shared by the cross-package tests (``one_thread`` is in the root conftest.py)."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture
def load_app():
    """Import an app's ``__main__.py`` as a module (apps are folders run by ``uv run apps/NAME``)."""
    root = Path(__file__).resolve().parents[1]

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"app_{name}", root / "apps" / name / "__main__.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


REFERENCE_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"


@pytest.fixture
def reference_fixture():
    """Load ``tests/fixtures/reference/<name>.safetensors`` and its ``<name>.json``: tensors recorded
    from a published implementation by the ``make_<family>.py`` script beside them, with the
    reference's commit id and configuration."""
    from safetensors.torch import load_file

    def load(name: str) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = load_file(REFERENCE_FIXTURES / f"{name}.safetensors")
        meta = json.loads((REFERENCE_FIXTURES / f"{name}.json").read_text())
        return tensors, meta

    return load


def _assert_parity(ours: torch.Tensor, reference: torch.Tensor, name: str, rtol: float) -> None:
    """Agreement relative to the reference's largest magnitude: elementwise relative error is
    meaningless for entries near zero (a gradient of 1e-12 against 3e-12)."""
    assert ours.shape == reference.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    scale = reference.abs().max().clamp_min(1e-12)
    error = ((ours.double() - reference.double()).abs().max() / scale).item()
    assert error <= rtol, f"{name}: max error {error:.3g} of the reference's largest value (allowed {rtol:g})"


@pytest.fixture
def assert_parity():
    """``assert_parity(ours, reference, name, rtol)``; a fixture because conftest is not importable
    under ``--import-mode=importlib``."""
    return _assert_parity
