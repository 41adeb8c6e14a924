"""One uint8 tensor per W8A8 weight: the 8-bit values' bytes [out, in], then rows holding the fp32 scales' bytes
(and, for a centring weight, its fp32 row sums').

Hosts move, back up and restore a layer's ``weight`` as one tensor (partial loading, LoRA patch/unpatch); keeping
the scales inside it means they always travel and get restored with the values they belong to. Bytes survive a
cast to any float dtype and back (0..255 are exact in fp16/bf16/fp32), as hosts do when they patch weights.
"""
from __future__ import annotations

import torch

from .formats import storage_dtype
from .weight import QuantizedWeight


def _extra_rows(out_features: int, in_features: int, centred: bool) -> int:
    return -(-(8 if centred else 4) * out_features // in_features)


def packed_shape(out_features: int, in_features: int, centred: bool = True) -> tuple[int, int]:
    """Shape of :func:`pack`'s result for a weight [out, in] (with row sums when ``centred``)."""
    return out_features + _extra_rows(out_features, in_features, centred), in_features


def pack(weight: QuantizedWeight) -> torch.Tensor:
    """``weight``'s values and scales as one uint8 tensor of :func:`packed_shape` (smoothing is not packable)."""
    if weight.smooth is not None:
        raise ValueError("a SmoothQuant weight carries a smoothing vector and cannot be packed; use 'hadamard'")
    n, k = weight.data.shape
    vectors = [weight.scale] + ([] if weight.row_sum is None else [weight.row_sum])
    rows, cols = packed_shape(n, k, weight.row_sum is not None)
    out = torch.zeros(rows, cols, dtype=torch.uint8, device=weight.data.device)
    out[:n] = weight.data.view(torch.uint8)
    extra = torch.cat([v.to(torch.float32) for v in vectors]).view(torch.uint8)
    out[n:].view(-1)[: extra.numel()] = extra
    return out


def unpack(packed: torch.Tensor, fmt: str, out_features: int, method: str, block: int,
           centred: bool = True) -> QuantizedWeight:
    """The :class:`QuantizedWeight` :func:`pack` stored in ``packed`` (uint8, or its bytes cast to a float dtype)."""
    if packed.dtype != torch.uint8:
        packed = packed.to(torch.uint8)
    n, k = out_features, packed.shape[1]
    if tuple(packed.shape) != packed_shape(n, k, centred):
        raise ValueError(f"a packed W8A8 weight of {n} outputs x {k} inputs has shape "
                         f"{packed_shape(n, k, centred)}, got {tuple(packed.shape)}")
    vectors = packed[n:].reshape(-1)[: (8 if centred else 4) * n].clone().view(torch.float32)
    return QuantizedWeight(fmt, packed[:n].view(storage_dtype(fmt)), vectors[:n], method, block,
                           row_sum=vectors[n:] if centred else None)
