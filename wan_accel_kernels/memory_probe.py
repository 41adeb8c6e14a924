"""Peak bytes of live tensors while code runs, on any device (CPU included), counted by a torch dispatch mode.

Why: CUDA has ``torch.cuda.max_memory_allocated`` but the CPU has no such counter; the VAE and GGUF memory models need
per-frame and per-block sizes measured on this CPU-only machine. Every tensor created by an op inside the mode is
tracked by its storage until the last tensor viewing that storage is freed; storages that existed before the mode
(weights, inputs) are not counted. Backend scratch memory that never becomes a tensor (cuDNN workspaces) is not seen.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _Storage:
    """One tracked storage: its size and how many live tensors view it."""

    __slots__ = ("nbytes", "views")

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.views = 0


class LiveTensorBytes(TorchDispatchMode):
    """Context manager: ``peak`` is the most bytes of tensors created inside it that were alive at once."""

    def __init__(self, device_type: str | None = None):
        super().__init__()
        self.device_type = device_type
        self.live = 0
        self.peak = 0
        self._storages: dict[tuple[str, int], _Storage] = {}

    def reset_peak(self) -> None:
        """Restarts the peak from the bytes alive now (e.g. to measure one step after a warm-up)."""
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {self._key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, inputs)
        return out

    def _key(self, tensor: torch.Tensor) -> tuple[str, int]:
        storage = tensor.untyped_storage()
        return str(storage.device), storage.data_ptr()

    def _track(self, tensor: torch.Tensor, inputs: set[tuple[str, int]]) -> None:
        if self.device_type is not None and tensor.device.type != self.device_type:
            return
        key = self._key(tensor)
        entry = self._storages.get(key)
        if entry is None:
            nbytes = tensor.untyped_storage().nbytes()
            if key in inputs or nbytes == 0:
                return  # a view of, or an in-place result on, a storage made outside the mode
            entry = _Storage(nbytes)
            self._storages[key] = entry
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        entry.views += 1
        weakref.finalize(tensor, self._release, key, entry)

    def _release(self, key: tuple[str, int], entry: _Storage) -> None:
        entry.views -= 1
        if entry.views == 0:
            self.live -= entry.nbytes
            if self._storages.get(key) is entry:
                del self._storages[key]
