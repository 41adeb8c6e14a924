"""Run-time detection of float8 storage support and of the dtype a Linear should compute in on a device."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .scaling import FP8_DTYPE

FALLBACK_STORAGE_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class StorageSupport:
    """Which dtype Linear weights are stored in on a device, and why."""

    storage_dtype: torch.dtype
    reason: str

    @property
    def fp8(self) -> bool:
        """True when weights are stored as float8_e4m3fn."""
        return self.storage_dtype == FP8_DTYPE


def _probe(device: torch.device) -> None:
    """Round-trips a few values through float8_e4m3fn on ``device``; raises where that is unsupported."""
    if FP8_DTYPE is None:
        raise RuntimeError("this torch build has no float8_e4m3fn dtype")
    values = torch.tensor([1.0, -2.5, 448.0, 0.015625], device=device)
    back = values.to(FP8_DTYPE).to(torch.float32)
    if not torch.equal(back, values):
        raise RuntimeError(f"float8_e4m3fn round trip gave {back.tolist()}")


@functools.lru_cache(maxsize=None)
def _support(device_str: str) -> StorageSupport:
    try:
        _probe(torch.device(device_str))
    except Exception as error:  # any failure of the probe means: do not store fp8 there
        return StorageSupport(FALLBACK_STORAGE_DTYPE,
                              f"torch {torch.__version__} cannot store float8_e4m3fn on {device_str} ({error})")
    return StorageSupport(FP8_DTYPE, f"float8_e4m3fn supported on {device_str}")


def storage_support(device: torch.device | str) -> StorageSupport:
    """float8_e4m3fn where torch can store and convert it on ``device``, else bf16 (cached per device)."""
    return _support(str(torch.device(device)))


@functools.lru_cache(maxsize=None)
def _compute_dtype(device_str: str) -> torch.dtype:
    device = torch.device(device_str)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


def compute_dtype_for(device: torch.device | str) -> torch.dtype:
    """bf16 on a GPU with native bf16 matmul; fp32 on CPU (bf16 matmul there is slow or emulated) and elsewhere."""
    return _compute_dtype(str(torch.device(device)))
