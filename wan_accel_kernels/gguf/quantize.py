"""Vectorised PyTorch quantisation to raw ggml blocks: Q8_0 (byte-exact with gguf-py) and Q6_K (ggml's reference).

Q6_K replicates ``quantize_row_q6_K_ref`` (ggml/src/ggml-quants.c) with ``make_qx_quants``' scale search, in
ggml's float32 operation order, so its bytes equal ggml's reference built without FMA contraction
(``-ffp-contract=off``; builds that fuse multiply-adds themselves differ on a few percent of blocks).
"""
from __future__ import annotations

import torch
from gguf import GGMLQuantizationType

from .qtypes import DEQUANTIZE_TYPES, QUANTIZE_TYPES, QType, qtype_name, resolve_qtype

QK_K = 256
GROUP_MAX_EPS = 1e-15  # ggml's "all zero" threshold on a group's largest magnitude


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C ``roundf`` (ties away from zero), exactly: floor(|x|) + floor(2 * frac) avoids the ``+ 0.5`` rounding trap."""
    a = x.abs()
    whole = a.floor()
    return (whole + (2 * (a - whole)).floor()).copysign(x)


def _f16_bytes(values: torch.Tensor) -> torch.Tensor:
    """float32 ``[n, 1]`` -> the little-endian fp16 bytes ``[n, 2]`` ggml stores (round to nearest even)."""
    return values.to(torch.float16).view(torch.uint8)


def quantize_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q8_0 as ``quantize_row_q8_0_ref``: ``d = amax / 127``, ``q = roundf(x * (1 / d))``; [n, 32] -> [n, 34] bytes."""
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = _round_half_away(blocks * inverse).to(torch.int8).view(torch.uint8)
    return torch.cat([_f16_bytes(d), q], dim=-1)


def _signed_absmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The first value of largest magnitude along ``dim``, sign kept (ggml's ``max`` with a strict ``>``)."""
    return x.gather(dim, x.abs().argmax(dim=dim, keepdim=True))


def _sequential_sum(terms: torch.Tensor) -> torch.Tensor:
    """Sum ``[n, G]`` over dim 0 left to right in float32, as ggml's scalar loop does (bit-exact, unlike sum())."""
    total = torch.zeros_like(terms[0])
    for term in terms:
        total.add_(term)
    return total


def _make_qx_quants(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml ``make_qx_quants(n, nmax, x, L, rmse_type=1, NULL)`` on groups laid out ``[n, G]``: (scale [G], L [n, G]).

    Tries ``iscale = -(nmax + 0.1 * is) / max`` for is = 0, -9..9 in ggml's order and keeps the candidate with the
    best x^2-weighted least-squares fit, replacing it only on a strict improvement, all in ggml's float32 order.
    """
    group_max = _signed_absmax(x, 0)[0]
    zero = group_max.abs() < GROUP_MAX_EPS
    group_max = torch.where(zero, torch.ones_like(group_max), group_max)
    weight = x * x
    weighted_x = weight * x
    levels, terms = torch.empty_like(x), torch.empty_like(x)  # reused by every candidate

    def candidate(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.mul(x, iscale, out=levels).round_().clamp_(-nmax, nmax - 1)
        sumlx = _sequential_sum(torch.mul(weighted_x, levels, out=terms))
        return sumlx, _sequential_sum(torch.mul(weight, levels, out=terms).mul_(levels))

    best_iscale = -nmax / group_max
    sumlx, suml2 = candidate(best_iscale)
    scale = torch.where(suml2 != 0, sumlx / suml2, torch.zeros_like(sumlx))
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        offset = torch.tensor(0.1, dtype=torch.float32) * step  # 0.1f * is, in float32 like ggml
        iscale = -(nmax + offset) / group_max
        sumlx, suml2 = candidate(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        best_iscale = torch.where(better, iscale, best_iscale)
        scale = torch.where(better, sumlx / suml2, scale)
        best = torch.where(better, scale * sumlx, best)
    torch.mul(x, best_iscale, out=levels).round_().clamp_(-nmax, nmax - 1).add_(nmax)  # L of the kept candidate
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    levels = torch.where(zero, torch.zeros_like(levels), levels)
    return scale, levels.to(torch.uint8)


def quantize_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q6_K as ``quantize_row_q6_K_ref``: per-16 scale search, int8 sub-scales, 6-bit quants; [n, 256] -> [n, 210]."""
    n = blocks.shape[0]
    groups = blocks.reshape(n, 16, 16)
    sub_scales, levels = _make_qx_quants(groups.reshape(-1, 16).T.contiguous(), 32)
    sub_scales = sub_scales.reshape(n, 16)
    levels = levels.T.reshape(n, 16, 16)

    max_scale = _signed_absmax(sub_scales, -1)
    empty = max_scale.abs() < GROUP_MAX_EPS
    iscale = -128 / torch.where(empty, torch.ones_like(max_scale), max_scale)
    d = torch.where(empty, torch.zeros_like(iscale), 1 / iscale).to(torch.float16)
    scales = torch.round(iscale * sub_scales).clamp_(max=127)
    scales = torch.where(empty, torch.zeros_like(scales), scales).to(torch.int8)

    step = (d.to(torch.float32) * scales).unsqueeze(-1)
    requant = torch.round(groups / torch.where(step == 0, torch.ones_like(step), step)).clamp_(-32, 31) + 32
    levels = torch.where(step == 0, levels, requant.to(torch.uint8))
    levels = torch.where(empty.unsqueeze(-1), torch.zeros_like(levels), levels)

    quads = levels.reshape(n, 2, 4, 32)  # [half, k, l] = L[128 * half + 32 * k + l]
    ql = (quads[:, :, :2] & 0x0F) | ((quads[:, :, 2:] & 0x0F) << 4)
    high = quads >> 4
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    return torch.cat(
        [ql.reshape(n, 128), qh.reshape(n, 64), scales.view(torch.uint8), d.view(torch.uint8)], dim=-1
    )


_T = GGMLQuantizationType

_BLOCK_QUANTIZERS = {_T.Q8_0: quantize_q8_0, _T.Q6_K: quantize_q6_k}
_FLOAT_TYPES = {_T.F32: torch.float32, _T.F16: torch.float16, _T.BF16: torch.bfloat16}


def quantize(x: torch.Tensor, qtype: QType) -> torch.Tensor:
    """Encode ``x`` as flat uint8 ggml blocks of ``qtype`` (rows along the last dim), ready to write to GGUF."""
    qtype = resolve_qtype(qtype, QUANTIZE_TYPES, "quantization")
    if qtype in _FLOAT_TYPES:
        return x.to(_FLOAT_TYPES[qtype]).contiguous().reshape(-1).view(torch.uint8)
    block_size, _ = DEQUANTIZE_TYPES[qtype]
    row = x.shape[-1] if x.dim() else 1
    if row % block_size:
        raise ValueError(
            f"GGUF type {qtype_name(qtype)} packs rows in blocks of {block_size} values, but shape "
            f"{tuple(x.shape)} has rows of {row}; pad the last dimension or keep this tensor in F16/BF16."
        )
    blocks = x.to(torch.float32).reshape(-1, block_size)
    return _BLOCK_QUANTIZERS[qtype](blocks).reshape(-1)
