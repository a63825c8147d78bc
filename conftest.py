"""Fixtures for every test tree (tests/ and packages/*/tests)."""

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
