"""A CUDA device of a chosen compute capability as torch reports it, for the W8A8 support checks on a CPU machine.

Only what ``wan_accel_kernels/w8a8/support.py`` asks torch is faked (``is_available``, the capability, the name);
the support module's own capability check then runs unchanged. Its per-device cache is cleared on entry and exit.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest
import torch


@contextmanager
def fake_cuda_device(support: ModuleType, capability: tuple[int, int], name: str) -> Iterator[None]:
    """Inside the block torch reports one CUDA device ``name`` of ``capability``; ``support`` is the ``w8a8.support``
    module under test (the top-level one, or the pack's copy in the host tier)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        patch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        patch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        support._support.cache_clear()
        try:
            yield
        finally:
            support._support.cache_clear()
