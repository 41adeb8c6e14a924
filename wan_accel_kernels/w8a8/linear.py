"""``linear(x, weight, bias)``: per-token centring, the weight's input transform, dynamic per-token activation
quantisation, 8-bit matmul, scale epilogue, the token means' exact contribution, bias."""
from __future__ import annotations

import torch

from .formats import dequantize_rows, quantize_rows
from .hadamard import rotate
from .matmul import scaled_matmul
from .outliers import HADAMARD, OUTLIER_CHANNELS, SMOOTHQUANT, outlier_columns
from .weight import QuantizedWeight


def _outlier_part(x: torch.Tensor, weight: QuantizedWeight) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x with its outlier channels zeroed, their 16-bit product with the dequantised weight columns or None)."""
    columns = outlier_columns(x)
    if columns.numel() == 0:
        return x, None
    compute = x.dtype if x.dtype in (torch.float16, torch.bfloat16) and x.is_cuda else torch.float32
    columns_w = dequantize_rows(weight.data[:, columns], weight.scale, compute)
    side = (x[:, columns].to(compute) @ columns_w.t()).to(torch.float32)
    rest = x.clone()
    rest[:, columns] = 0
    return rest, side


def linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W^T + bias`` for ``x`` [..., in] with W8A8 ``weight``: tokens quantised to 8 bits with one scale each
    (after centring and the weight's input transform), multiplied in 8 bits, rescaled in float32; returned in
    x's dtype."""
    if x.shape[-1] != weight.in_features:
        raise ValueError(f"input width {x.shape[-1]} does not match the W8A8 weight's {weight.in_features}")
    rows = x.reshape(-1, x.shape[-1])
    side, mean = None, None
    if weight.row_sum is not None:
        mean = rows.to(torch.float32).mean(dim=-1, keepdim=True)
        rows = (rows - mean).to(rows.dtype)
    if weight.method == HADAMARD:
        rows = rotate(rows, weight.block)
    elif weight.method == SMOOTHQUANT:
        rows = rows / weight.smooth.to(rows.device, rows.dtype)
    elif weight.method == OUTLIER_CHANNELS:
        rows, side = _outlier_part(rows, weight)
    qx, sx = quantize_rows(rows, weight.fmt)
    out = scaled_matmul(qx, sx, weight.data, weight.scale, weight.fmt)
    if side is not None:
        out += side
    if mean is not None:
        out += mean * weight.row_sum.to(out.device).unsqueeze(0)
    if bias is not None:
        out += bias.to(out.device, torch.float32)
    return out.to(x.dtype).reshape(*x.shape[:-1], weight.out_features)
