"""Fixtures shared by the cross-package tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny convolutions run far faster single-threaded on a shared, loaded CPU (two spinning
    threads were up to 30x slower here); the previous count is restored, also after trainers
    whose ``threads`` option sets the process-wide value."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
