"""The GGUF tensor types wan-accel reads and writes, with their ggml block geometry."""
from __future__ import annotations

import math
from typing import Iterable, Sequence, Union

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

QType = Union[GGMLQuantizationType, int]

_T = GGMLQuantizationType

# Types ``dequantize`` reads -> (values per block, bytes per block).
DEQUANTIZE_TYPES: dict[GGMLQuantizationType, tuple[int, int]] = {
    t: GGML_QUANT_SIZES[t]
    for t in (_T.F32, _T.F16, _T.BF16, _T.Q8_0, _T.Q4_0, _T.Q4_1, _T.Q5_0, _T.Q5_1, _T.Q4_K, _T.Q5_K, _T.Q6_K)
}

# Types ``quantize`` writes (a subset of DEQUANTIZE_TYPES).
QUANTIZE_TYPES: tuple[GGMLQuantizationType, ...] = (_T.F32, _T.F16, _T.BF16, _T.Q8_0, _T.Q6_K)


class UnsupportedQuantizationError(ValueError):
    """A GGUF tensor type this package cannot (de)quantise; the message names it and the supported ones."""


def qtype_name(qtype: QType) -> str:
    """Name of a GGUF type ("Q6_K"), or its number when gguf does not know it, for messages."""
    try:
        return GGMLQuantizationType(int(qtype)).name
    except ValueError:
        return str(int(qtype))


def resolve_qtype(qtype: QType, supported: Iterable[GGMLQuantizationType], action: str) -> GGMLQuantizationType:
    """Normalise an int or enum to a ``GGMLQuantizationType`` in ``supported``, else raise a named error."""
    supported = tuple(supported)
    try:
        resolved = GGMLQuantizationType(int(qtype))
    except ValueError:
        resolved = None
    if resolved not in supported:
        names = ", ".join(t.name for t in supported)
        raise UnsupportedQuantizationError(
            f"GGUF type {qtype_name(qtype)} is not supported for {action}; supported: {names}. "
            "Use one of these types."
        )
    return resolved


def block_geometry(qtype: QType) -> tuple[int, int]:
    """(values per block, bytes per block) of a type ``dequantize`` supports."""
    return DEQUANTIZE_TYPES[resolve_qtype(qtype, DEQUANTIZE_TYPES, "dequantization")]


def tensor_nbytes(qtype: QType, shape: Sequence[int]) -> int:
    """Bytes of raw ggml blocks holding a tensor of torch ``shape``; rows must fill whole blocks."""
    block_size, type_size = block_geometry(qtype)
    row = shape[-1] if len(shape) else 1
    if row % block_size:
        raise ValueError(
            f"GGUF type {qtype_name(qtype)} packs rows in blocks of {block_size} values, but shape {tuple(shape)} "
            f"has rows of {row}; use a type whose block size divides the last dimension (e.g. F16)."
        )
    return math.prod(shape) // block_size * type_size


def check_raw_blocks(data: torch.Tensor, qtype: GGMLQuantizationType, shape: Sequence[int]) -> tuple[int, ...]:
    """The shape as ints, after checking ``data`` is uint8 raw bytes of exactly a ``shape`` tensor of ``qtype``."""
    if data.dtype != torch.uint8:
        raise ValueError(f"GGUF data must be raw uint8 bytes, got {data.dtype}; pass tensor.view(torch.uint8).")
    shape = tuple(int(s) for s in shape)
    expected = tensor_nbytes(qtype, shape)
    if data.numel() != expected:
        raise ValueError(
            f"GGUF {qtype_name(qtype)} tensor of shape {shape} needs {expected} bytes, got {data.numel()}; "
            "check the shape (torch order, outermost first) and that the bytes are the whole tensor."
        )
    return shape
