"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def keep_torch_threads():
    """Engines set the calling thread's torch threads (split or replicated ones fewer); later tests want theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
