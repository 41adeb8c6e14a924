"""Vectorised PyTorch dequantisation of raw ggml blocks, bit-exact against ``gguf.quants.dequantize``.

Each ``dequantize_<type>`` takes a ``[n_blocks, type_size]`` uint8 view and returns ``[n_blocks, block_size]``
float32. The arithmetic is float32 in gguf-py's association order (e.g. Q6_K is ``(d * sc) * q``), so results
match gguf-py bit for bit on any device; eager PyTorch runs each product as its own kernel, with no FMA fusion.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from gguf import GGMLQuantizationType

from .qtypes import DEQUANTIZE_TYPES, QType, check_raw_blocks, resolve_qtype

QK_K = 256


def _scaled(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``float32(q) * scale`` (``scale`` broadcast), scaling in place so only one float32 tensor is allocated."""
    return q.to(torch.float32).mul_(scale)


def _f16(field: torch.Tensor) -> torch.Tensor:
    """fp16 scale bytes ``[n, 2]`` -> float32 ``[n, 1]``."""
    return field.contiguous().view(torch.float16).to(torch.float32)


def _unpack(packed: torch.Tensor, width: int) -> torch.Tensor:
    """Split bytes ``[..., k]`` into ``[..., 8 // width, k]`` fields of ``width`` bits, lowest bits first."""
    mask = (1 << width) - 1
    return torch.stack([(packed >> shift) & mask for shift in range(0, 8, width)], dim=-2)


def _low_bits32(qh: torch.Tensor) -> torch.Tensor:
    """Little-endian uint32 bytes ``[n, 4]`` -> its 32 bits ``[n, 32]`` as 0/1 uint8, bit 0 first."""
    return _unpack(qh, 1).transpose(-2, -1).reshape(qh.shape[0], 32)


def _nibbles32(qs: torch.Tensor) -> torch.Tensor:
    """16 bytes of 4-bit quants ``[n, 16]`` -> ``[n, 32]``: low nibbles first, then high nibbles."""
    return _unpack(qs, 4).reshape(qs.shape[0], 32)


def dequantize_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q8_0: ``q * d`` with 32 int8 quants and an fp16 scale per block."""
    return _scaled(blocks[:, 2:].view(torch.int8), _f16(blocks[:, :2]))


def dequantize_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_0: ``d * (q - 8)`` with 4-bit quants."""
    q = _nibbles32(blocks[:, 2:]).view(torch.int8) - 8
    return _scaled(q, _f16(blocks[:, :2]))


def dequantize_q4_1(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_1: ``d * q + m`` with 4-bit quants."""
    return _scaled(_nibbles32(blocks[:, 4:]), _f16(blocks[:, :2])).add_(_f16(blocks[:, 2:4]))


def dequantize_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q5_0: ``d * (q - 16)`` with 5-bit quants (fifth bits packed in a uint32)."""
    q = (_nibbles32(blocks[:, 6:]) | (_low_bits32(blocks[:, 2:6]) << 4)).view(torch.int8) - 16
    return _scaled(q, _f16(blocks[:, :2]))


def dequantize_q5_1(blocks: torch.Tensor) -> torch.Tensor:
    """Q5_1: ``d * q + m`` with 5-bit quants (fifth bits packed in a uint32)."""
    q = _nibbles32(blocks[:, 8:]) | (_low_bits32(blocks[:, 4:8]) << 4)
    return _scaled(q, _f16(blocks[:, :2])).add_(_f16(blocks[:, 2:4]))


def _k_scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack the 12-byte 6-bit scales/mins of Q4_K/Q5_K into two ``[n, 8]`` uint8 tensors."""
    d, m, m_d = packed.reshape(-1, 3, 4).unbind(1)
    scales = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mins = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return scales, mins


def _k_affine(blocks: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``(d * sc) * q - (dmin * m)`` per 32-value sub-block for Q4_K/Q5_K; ``q`` is ``[n, 8, 32]``."""
    scales, mins = _k_scales_mins(blocks[:, 4:16])
    d = (_f16(blocks[:, :2]) * scales).unsqueeze(-1)
    dm = (_f16(blocks[:, 2:4]) * mins).unsqueeze(-1)
    return _scaled(q, d).sub_(dm).reshape(-1, QK_K)


def dequantize_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_K: 256-value super-blocks of eight 32-value sub-blocks with 6-bit scales and mins."""
    q = _unpack(blocks[:, 16:].reshape(-1, 4, 32), 4).reshape(-1, 8, 32)
    return _k_affine(blocks, q)


def dequantize_q5_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q5_K: as Q4_K, plus a fifth bit per value from 32 high-bit bytes."""
    ql = _unpack(blocks[:, 48:].reshape(-1, 4, 32), 4).reshape(-1, 8, 32)
    qh = _unpack(blocks[:, 16:48], 1)
    return _k_affine(blocks, ql | (qh << 4))


def dequantize_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q6_K: ``(d * sc) * (q - 32)`` with 6-bit quants and 16 int8 sub-block scales per 256 values."""
    n = blocks.shape[0]
    ql = _unpack(blocks[:, :128].reshape(n, 2, 64), 4).reshape(n, 16, 16)
    qh = _unpack(blocks[:, 128:192].reshape(n, 2, 32), 2).reshape(n, 16, 16)
    q = (ql | (qh << 4)).view(torch.int8) - 32
    d = _f16(blocks[:, 208:210]) * blocks[:, 192:208].view(torch.int8)
    return _scaled(q, d.unsqueeze(-1)).reshape(n, QK_K)


_T = GGMLQuantizationType

BLOCK_DEQUANTIZERS: dict[GGMLQuantizationType, Callable[[torch.Tensor], torch.Tensor]] = {
    _T.Q8_0: dequantize_q8_0,
    _T.Q4_0: dequantize_q4_0,
    _T.Q4_1: dequantize_q4_1,
    _T.Q5_0: dequantize_q5_0,
    _T.Q5_1: dequantize_q5_1,
    _T.Q4_K: dequantize_q4_k,
    _T.Q5_K: dequantize_q5_k,
    _T.Q6_K: dequantize_q6_k,
}

_FLOAT_TYPES: dict[GGMLQuantizationType, torch.dtype] = {
    _T.F32: torch.float32,
    _T.F16: torch.float16,
    _T.BF16: torch.bfloat16,
}


def dequantize(
    data: torch.Tensor, qtype: QType, shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Decode raw ggml bytes into a ``shape`` tensor of ``dtype`` on ``data.device`` (torch dim order).

    F32/F16/BF16 data already in ``dtype`` comes back as a view sharing memory with ``data``.
    """
    qtype = resolve_qtype(qtype, DEQUANTIZE_TYPES, "dequantization")
    shape = check_raw_blocks(data, qtype, shape)
    flat = data.reshape(-1)
    if qtype in _FLOAT_TYPES:
        source = _FLOAT_TYPES[qtype]
        if flat.storage_offset() % source.itemsize:  # a view at an odd byte offset cannot be reinterpreted
            flat = flat.clone()
        return flat.view(source).reshape(shape).to(dtype)
    _, type_size = DEQUANTIZE_TYPES[qtype]
    values = BLOCK_DEQUANTIZERS[qtype](flat.view(-1, type_size))
    return values.reshape(shape).to(dtype)
