"""float8_e4m3fn weight quantisation: per-row or per-tensor scales, quantise and dequantise.

A weight ``w`` [out, in] is stored as ``q = w / s`` in float8_e4m3fn (3 mantissa bits, largest finite 448)
and an fp32 scale ``s`` that maps the largest magnitude of its row (``per_row``, shape [out]) or of the whole
tensor (``per_tensor``, shape []) to 448. ``dequantize(q, s) = q * s`` row-wise. Work is done in row chunks so
quantising a 10240x4096 umt5 weight never holds more than a few MB of fp32 temporaries.
"""
from __future__ import annotations

import torch

FP8_DTYPE: torch.dtype | None = getattr(torch, "float8_e4m3fn", None)
"""None on torch builds older than 2.1, which have no float8 dtypes (storage then falls back to bf16)."""
FP8_MAX = 448.0
GRANULARITIES = ("per_row", "per_tensor")
CHUNK_ELEMENTS = 1 << 22


def _row_chunks(rows: int, cols: int) -> range:
    """Start rows of chunks holding about ``CHUNK_ELEMENTS`` elements each."""
    return range(0, rows, max(1, CHUNK_ELEMENTS // max(cols, 1)))


def _as_matrix(weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D Linear weight, got shape {tuple(weight.shape)}")
    return weight


def row_absmax(weight: torch.Tensor) -> torch.Tensor:
    """Largest |w| of every row, in fp32 (shape [out])."""
    weight = _as_matrix(weight)
    rows, cols = weight.shape
    out = torch.empty(rows, dtype=torch.float32, device=weight.device)
    step = _row_chunks(rows, cols).step
    for start in _row_chunks(rows, cols):
        out[start:start + step] = weight[start:start + step].float().abs().amax(dim=1)
    return out


def weight_scale(weight: torch.Tensor, granularity: str = "per_row") -> torch.Tensor:
    """fp32 scale that maps the largest |w| (of each row or of the tensor) to 448; 1 where that is 0."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    amax = row_absmax(weight)
    if granularity == "per_tensor":
        amax = amax.amax() if amax.numel() else torch.zeros((), dtype=torch.float32, device=weight.device)
    if not bool(torch.isfinite(amax).all()):
        raise ValueError("the weight holds inf or NaN values; it cannot be scaled to float8")
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def quantize_with_scale(weight: torch.Tensor, scale: torch.Tensor,
                        storage_dtype: torch.dtype | None = FP8_DTYPE) -> torch.Tensor:
    """``weight / scale`` rounded to ``storage_dtype`` (saturating at ±448 for float8)."""
    weight = _as_matrix(weight)
    rows, cols = weight.shape
    row_scale = scale.to(device=weight.device, dtype=torch.float32).reshape(-1, 1).expand(rows, 1)
    out = torch.empty(rows, cols, dtype=storage_dtype, device=weight.device)
    limit = FP8_MAX if storage_dtype == FP8_DTYPE else float(torch.finfo(storage_dtype).max)
    step = _row_chunks(rows, cols).step
    for start in _row_chunks(rows, cols):
        chunk = weight[start:start + step].float() / row_scale[start:start + step]
        out[start:start + step] = chunk.clamp_(-limit, limit).to(storage_dtype)
    return out


def quantize(weight: torch.Tensor, granularity: str = "per_row",
             storage_dtype: torch.dtype | None = FP8_DTYPE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)`` with ``q`` in ``storage_dtype``; a 16-bit fallback storage keeps the values, scale 1."""
    if storage_dtype != FP8_DTYPE:
        ones = torch.ones(_as_matrix(weight).shape[0] if granularity == "per_row" else (),
                          dtype=torch.float32, device=weight.device)
        return weight.to(storage_dtype), ones
    scale = weight_scale(weight, granularity)
    return quantize_with_scale(weight, scale), scale


def broadcast_scale(scale: torch.Tensor, rows: int, granularity: str) -> torch.Tensor:
    """A scalar scale (e.g. a "scaled fp8" file's ``scale_weight``) in the layout ``granularity`` uses."""
    scale = scale.to(torch.float32).reshape(-1)
    if scale.numel() not in (1, rows):
        raise ValueError(f"a scale of {scale.numel()} values does not fit a weight of {rows} rows")
    if granularity == "per_row":
        return scale.expand(rows).clone()
    if scale.numel() != 1:
        raise ValueError("a per-row scale cannot be stored per tensor without requantising")
    return scale.reshape(())


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q * scale`` (scale per row or per tensor) in ``dtype``."""
    q = _as_matrix(q)
    return q.to(dtype) * scale.to(device=q.device, dtype=dtype).reshape(-1, 1)


def weight_from_file(weight: torch.Tensor, file_scale: torch.Tensor | None, granularity: str = "per_row",
                     storage_dtype: torch.dtype | None = FP8_DTYPE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)`` for a Linear weight as read from a file of any precision.

    float8_e4m3fn weights (plain or "scaled fp8" files with a scalar ``scale_weight``) are copied byte for byte
    (never aliasing the file's memory map) with their scale (1 when absent); every other dtype (fp32, fp16,
    bf16, float8_e5m2) is dequantised with its file scale if any and quantised afresh.
    """
    rows = _as_matrix(weight).shape[0]
    if FP8_DTYPE is not None and weight.dtype == FP8_DTYPE and storage_dtype == FP8_DTYPE:
        scale = file_scale if file_scale is not None else torch.ones((), device=weight.device)
        return weight.clone(), broadcast_scale(scale.to(weight.device), rows, granularity)
    if file_scale is not None:
        weight = dequantize(weight, file_scale.to(weight.device))
    return quantize(weight, granularity, storage_dtype)
