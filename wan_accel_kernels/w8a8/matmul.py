"""8-bit matmul with the row-scale epilogue: ``(qx @ qw^T) * sx[:, None] * sw[None, :]`` in float32.

int8: ``torch._int_mm`` (int32 accumulation, exact on CPU too). Its CUDA kernels need more than 16 rows and
widths that are multiples of 8, so inputs are zero-padded to that (which changes no result) and the output cut.
fp8 e4m3: ``torch._scaled_mm`` with row-wise scales where the device supports it (CUDA sm89+), whose output is
bf16; elsewhere an emulation computing the same thing: the 8-bit values times their scales, multiplied in
float32 and rounded to bf16, so fp8 numerics are testable on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .formats import INT8
from .support import matmul_support

MIN_ROWS = 17
ALIGN = {INT8: 8, "fp8": 16}


def _pad_to(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    pad_rows, pad_cols = rows - t.shape[0], cols - t.shape[1]
    if pad_rows == 0 and pad_cols == 0:
        return t
    return F.pad(t.view(torch.int8) if t.dtype != torch.int8 else t, (0, pad_cols, 0, pad_rows)).view(t.dtype)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded(qx: torch.Tensor, qw: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``qx`` [M, K] and ``qw`` [N, K] zero-padded to M >= 17 and K, N multiples of the format's alignment."""
    align = ALIGN[fmt]
    k = _round_up(qx.shape[1], align)
    return (_pad_to(qx, max(MIN_ROWS, _round_up(qx.shape[0], align)), k),
            _pad_to(qw, _round_up(qw.shape[0], align), k))


def int8_matmul(qx: torch.Tensor, sx: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    """int8 ``qx`` [M, K] (scales ``sx`` [M]) times int8 ``qw`` [N, K] (scales ``sw`` [N]) -> float32 [M, N]."""
    m, n = qx.shape[0], qw.shape[0]
    a, b = padded(qx, qw, INT8)
    acc = torch._int_mm(a, b.t())[:m, :n]
    return acc.to(torch.float32).mul_(sw.unsqueeze(0)).mul_(sx.unsqueeze(1))


def fp8_matmul(qx: torch.Tensor, sx: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    """fp8 e4m3 ``qx`` [M, K] times ``qw`` [N, K] with row-wise scales -> [M, N] bf16 values (as float32)."""
    if not matmul_support(qx.device, "fp8").native:
        return emulated_fp8_matmul(qx, sx, qw, sw)
    m, n = qx.shape[0], qw.shape[0]
    a, b = padded(qx, qw, "fp8")
    sa = F.pad(sx, (0, a.shape[0] - m), value=1.0).unsqueeze(1)
    sb = F.pad(sw, (0, b.shape[0] - n), value=1.0).unsqueeze(0)
    out = torch._scaled_mm(a, b.t(), scale_a=sa.contiguous(), scale_b=sb.contiguous(), out_dtype=torch.bfloat16)
    return out[:m, :n].to(torch.float32)


def emulated_fp8_matmul(qx: torch.Tensor, sx: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    """What row-wise ``_scaled_mm`` computes, on any device: fp32 products of the fp8 values, scaled, to bf16."""
    acc = qx.to(torch.float32) @ qw.to(torch.float32).t()
    return acc.mul_(sw.unsqueeze(0)).mul_(sx.unsqueeze(1)).to(torch.bfloat16).to(torch.float32)


def scaled_matmul(qx: torch.Tensor, sx: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor, fmt: str) -> torch.Tensor:
    """The 8-bit product of ``fmt`` with both row-scale vectors applied, float32 [M, N]."""
    return (int8_matmul if fmt == INT8 else fp8_matmul)(qx, sx, qw, sw)
