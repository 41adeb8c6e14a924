"""The two 8-bit formats and symmetric per-row quantisation: int8 (round to nearest, ±127) and fp8 e4m3 (±448).

A row ``r`` (a weight's output channel or an activation's token) is stored as ``q = r / s`` with
``s = max|r| / QMAX`` (1 where the row is all zero), so ``r ≈ q * s``. Everything is computed in float32.
"""
from __future__ import annotations

import torch

INT8, FP8 = "int8", "fp8"
FORMATS = (INT8, FP8)
FP8_DTYPE: torch.dtype | None = getattr(torch, "float8_e4m3fn", None)
QMAX = {INT8: 127.0, FP8: 448.0}


def check_format(fmt: str) -> str:
    """``fmt`` when it is ``"int8"`` or ``"fp8"``; a ValueError naming the choices otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"W8A8 format must be one of {FORMATS}, got {fmt!r}")
    if fmt == FP8 and FP8_DTYPE is None:
        raise ValueError(f"torch {torch.__version__} has no float8_e4m3fn dtype; use fmt='int8' or a newer torch")
    return fmt


def storage_dtype(fmt: str) -> torch.dtype:
    """The tensor dtype 8-bit values of ``fmt`` are held in."""
    return torch.int8 if check_format(fmt) == INT8 else FP8_DTYPE


def row_scales(rows: torch.Tensor, fmt: str) -> torch.Tensor:
    """fp32 scale per row (last dim reduced) mapping the row's largest magnitude to the format's maximum."""
    amax = rows.abs().amax(dim=-1).to(torch.float32)
    return torch.where(amax > 0, amax / QMAX[check_format(fmt)], torch.ones_like(amax))


def quantize_rows(rows: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: ``rows`` [..., k] in 8 bits with one fp32 scale per row [...]."""
    scale = row_scales(rows, fmt)
    scaled = rows.to(torch.float32) / scale.unsqueeze(-1)
    if fmt == INT8:
        return scaled.round_().clamp_(-127, 127).to(torch.int8), scale
    return scaled.clamp_(-QMAX[FP8], QMAX[FP8]).to(FP8_DTYPE), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q * scale`` row-wise in ``dtype`` (the inverse of :func:`quantize_rows` up to rounding)."""
    return (q.to(torch.float32) * scale.to(q.device, torch.float32).unsqueeze(-1)).to(dtype)
