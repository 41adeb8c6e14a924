"""A W8A8 weight: 8-bit values with one fp32 scale per output channel, plus the input transform folded into it."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .formats import INT8, check_format, dequantize_rows, quantize_rows
from .hadamard import DEFAULT_MAX_BLOCK, block_size, rotate
from .outliers import HADAMARD, SMOOTH_ALPHA, SMOOTHQUANT, check_method, default_method, smoothing_factors


@dataclass(frozen=True)
class QuantizedWeight:
    """``data`` [out, in] (int8 or float8_e4m3fn) times ``scale`` [out] is the weight in the transformed basis.

    ``method`` says how activations are transformed before quantisation: rotated in Hadamard blocks of
    ``block`` (``hadamard``), divided by ``smooth`` [in] (``smoothquant``), or not at all. With ``row_sum``
    [out] (``W_q 1``, fp32) each token is centred first and its mean ``m`` added back exactly as ``m * row_sum``:
    a nonzero-mean input (post-GELU) then no longer puts its mean into the 8-bit range.
    """

    fmt: str
    data: torch.Tensor
    scale: torch.Tensor
    method: str
    block: int = 1
    smooth: torch.Tensor | None = None
    row_sum: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return self.data.shape[0]

    @property
    def in_features(self) -> int:
        return self.data.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held: 8-bit values, scales and any smoothing vector."""
        extras = (t.nbytes for t in (self.smooth, self.row_sum) if t is not None)
        return self.data.nbytes + self.scale.nbytes + sum(extras)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "QuantizedWeight":
        """The same weight on ``device``."""
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, data=move(self.data), scale=move(self.scale), smooth=move(self.smooth),
                       row_sum=move(self.row_sum))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight this layer computes with, in the original input basis [out, in] (for LoRA and checks)."""
        weight = dequantize_rows(self.data, self.scale)
        if self.method == HADAMARD:
            weight = rotate(weight, self.block)
        elif self.method == SMOOTHQUANT:
            weight = weight / self.smooth.to(weight.device).unsqueeze(0)
        return weight.to(dtype)


def quantize_weight(w: torch.Tensor, fmt: str = INT8, method: str | None = None,
                    act_absmax: torch.Tensor | None = None, max_block: int = DEFAULT_MAX_BLOCK,
                    alpha: float = SMOOTH_ALPHA, center: bool = True) -> QuantizedWeight:
    """``w`` [out, in] (any float dtype) as a W8A8 weight of ``fmt`` ("int8" or "fp8"), outliers handled by
    ``method`` (None: the format's measured default), tokens centred when ``center``; ``smoothquant`` needs ``act_absmax`` [in], the calibration
    activations' largest |x| per channel."""
    method = check_method(default_method(check_format(fmt)) if method is None else method)
    if w.dim() != 2:
        raise ValueError(f"quantize_weight expects a 2-D Linear weight [out, in], got shape {tuple(w.shape)}")
    weight = w.detach().to(torch.float32)
    block, smooth = 1, None
    if method == HADAMARD:
        block = block_size(weight.shape[1], max_block)
        weight = rotate(weight, block)
    elif method == SMOOTHQUANT:
        if act_absmax is None:
            raise ValueError("method='smoothquant' needs act_absmax (per-channel max |x| of calibration inputs)")
        smooth = smoothing_factors(act_absmax, weight, alpha)
        weight = weight * smooth.unsqueeze(0)
    data, scale = quantize_rows(weight, fmt)
    quantized = QuantizedWeight(fmt, data, scale, method, block, smooth)
    return replace(quantized, row_sum=quantized.dequantize().sum(dim=1)) if center else quantized
