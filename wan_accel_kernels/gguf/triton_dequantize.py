"""Triton kernels that decode raw ggml Q8_0, Q4_K, Q5_K and Q6_K blocks to bf16/fp16/fp32 on the GPU.

Bit-exact against :func:`wan_accel_kernels.gguf.dequantize`: each value is computed in float32 in the same association
order (Q6_K ``(d * sc) * q``, Q8_0 ``q * d``, Q4_K/Q5_K ``q * (d * sc) - dmin * m``) and rounded to the output
dtype to nearest even, as ``Tensor.to`` does. Kernels are launched with ``enable_fp_fusion=False`` so that no
multiply-add is contracted into an FMA (which would round once instead of twice). Importing this module needs
``triton``; under ``TRITON_INTERPRET=1`` (set before the import) the kernels run on CPU tensors, which is how the
unit tests check them without a GPU.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import triton
import triton.language as tl
from gguf import GGMLQuantizationType
from triton.runtime.interpreter import InterpretedFunction

from .qtypes import QType, check_raw_blocks, resolve_qtype

_T = GGMLQuantizationType

TRITON_DEQUANTIZE_TYPES: tuple[GGMLQuantizationType, ...] = (_T.Q8_0, _T.Q4_K, _T.Q5_K, _T.Q6_K)
TRITON_OUTPUT_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16, torch.float32)

VALUES_PER_PROGRAM = 1024
"""Values one program decodes on a GPU: 4 warps, 8 values per thread, a few thousand programs per large weight."""

COMPILE_OPTIONS = {"enable_fp_fusion": False}
"""Launch options of every kernel here: no multiply-add contraction, so values round as in the torch path."""

INTERPRETER_VALUES_PER_PROGRAM = 65536
"""Under ``TRITON_INTERPRET=1`` every program is a Python call: large programs keep the CPU tests fast."""


@triton.jit
def _load_f16(ptr, mask):
    """The little-endian fp16 at byte ``ptr`` (any alignment), as float32."""
    low = tl.load(ptr, mask=mask, other=0).to(tl.uint16)
    high = tl.load(ptr + 1, mask=mask, other=0).to(tl.uint16)
    return (low | (high << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _load_i8(ptr, mask):
    """The int8 at byte ``ptr``, as float32."""
    return tl.load(ptr, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)


@triton.jit
def _value_offsets(n_values, BLOCK: tl.constexpr):
    """This program's value indices (int64, so byte offsets of multi-GiB tensors do not overflow) and mask."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offsets, offsets < n_values


@triton.jit
def round_to(x, dtype: tl.constexpr):
    """float32 ``x`` rounded to ``dtype`` to nearest even, as ``Tensor.to`` does.

    bf16 is rounded with integer ops: Triton's interpreter truncates on a plain cast, so the CPU tests would
    otherwise check a different rounding than the GPU runs.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(tl.uint16)
        rounded = tl.where(x != x, 0x7FC0, rounded).to(tl.uint16)  # NaN stays a quiet NaN
        return rounded.to(tl.bfloat16, bitcast=True)
    return x.to(dtype)


@triton.jit
def _q8_0_kernel(src, out, n_values, BLOCK: tl.constexpr):
    """Q8_0, 34-byte blocks of 32 values: fp16 ``d`` then 32 int8 quants; value ``q * d``."""
    offsets, mask = _value_offsets(n_values, BLOCK)
    base = src + (offsets // 32) * 34
    q = _load_i8(base + 2 + offsets % 32, mask)
    d = _load_f16(base, mask)
    tl.store(out + offsets, round_to(q * d, out.dtype.element_ty), mask=mask)


@triton.jit
def _k_scale_min(base, sub, mask):
    """The 6-bit scale and min of sub-block ``sub`` (0..7) from the 12 packed bytes at ``base + 4`` (Q4_K/Q5_K)."""
    low = sub % 4
    d_bytes = tl.load(base + 4 + low, mask=mask, other=0)
    m_bytes = tl.load(base + 8 + low, mask=mask, other=0)
    md_bytes = tl.load(base + 12 + low, mask=mask, other=0)
    first = sub < 4
    scale = tl.where(first, d_bytes & 0x3F, (md_bytes & 0x0F) | ((d_bytes >> 2) & 0x30))
    minimum = tl.where(first, m_bytes & 0x3F, (md_bytes >> 4) | ((m_bytes >> 2) & 0x30))
    return scale.to(tl.float32), minimum.to(tl.float32)


@triton.jit
def _k_affine(base, q, sub, mask):
    """``q * (d * sc) - dmin * m`` in float32 for Q4_K/Q5_K, the torch path's order."""
    scale, minimum = _k_scale_min(base, sub, mask)
    d = _load_f16(base, mask)
    dmin = _load_f16(base + 2, mask)
    return q.to(tl.float32) * (d * scale) - dmin * minimum


@triton.jit
def _q4_k_kernel(src, out, n_values, BLOCK: tl.constexpr):
    """Q4_K, 144-byte super-blocks of 256: d, dmin, 12 scale bytes, 128 nibble bytes (32 per pair of sub-blocks)."""
    offsets, mask = _value_offsets(n_values, BLOCK)
    base = src + (offsets // 256) * 144
    value = offsets % 256
    sub = value // 32
    packed = tl.load(base + 16 + (sub // 2) * 32 + value % 32, mask=mask, other=0)
    q = (packed >> ((sub % 2) * 4)) & 0x0F
    tl.store(out + offsets, round_to(_k_affine(base, q, sub, mask), out.dtype.element_ty), mask=mask)


@triton.jit
def _q5_k_kernel(src, out, n_values, BLOCK: tl.constexpr):
    """Q5_K, 176-byte super-blocks: as Q4_K with 32 high-bit bytes (bit ``sub`` of byte ``l``) before the nibbles."""
    offsets, mask = _value_offsets(n_values, BLOCK)
    base = src + (offsets // 256) * 176
    value = offsets % 256
    sub = value // 32
    lane = value % 32
    packed = tl.load(base + 48 + (sub // 2) * 32 + lane, mask=mask, other=0)
    high = tl.load(base + 16 + lane, mask=mask, other=0)
    q = ((packed >> ((sub % 2) * 4)) & 0x0F) | (((high >> sub) & 1) << 4)
    tl.store(out + offsets, round_to(_k_affine(base, q, sub, mask), out.dtype.element_ty), mask=mask)


@triton.jit
def q6_k_values(base, value, mask):
    """Q6_K values at indices ``value`` (0..255) of the 210-byte blocks at ``base``: ``(d * sc) * (q - 32)`` in float32.

    Layout: 128 low-nibble bytes, 64 high-2-bit bytes, 16 int8 sub-block scales, fp16 ``d``. Shared with the fused
    matmul kernel, so both decode identically.
    """
    half = value // 128
    rest = value % 128
    low = tl.load(base + half * 64 + rest % 64, mask=mask, other=0)
    high = tl.load(base + 128 + half * 32 + rest % 32, mask=mask, other=0)
    q = (((low >> ((rest // 64) * 4)) & 0x0F) | (((high >> ((rest // 32) * 2)) & 0x03) << 4)).to(tl.int32) - 32
    scale = _load_i8(base + 192 + value // 16, mask)
    d = _load_f16(base + 208, mask)
    return (d * scale) * q.to(tl.float32)


@triton.jit
def _q6_k_kernel(src, out, n_values, BLOCK: tl.constexpr):
    """Q6_K, 210-byte super-blocks of 256 values."""
    offsets, mask = _value_offsets(n_values, BLOCK)
    values = q6_k_values(src + (offsets // 256) * 210, offsets % 256, mask)
    tl.store(out + offsets, round_to(values, out.dtype.element_ty), mask=mask)


KERNELS = {_T.Q8_0: _q8_0_kernel, _T.Q4_K: _q4_k_kernel, _T.Q5_K: _q5_k_kernel, _T.Q6_K: _q6_k_kernel}
"""The kernel of each type in ``TRITON_DEQUANTIZE_TYPES``; each takes (bytes, out, n_values, BLOCK)."""


def interpreting() -> bool:
    """True when these kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return isinstance(_q6_k_kernel, InterpretedFunction)


def triton_dequantize(
    data: torch.Tensor, qtype: QType, shape: Sequence[int], dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """Decode raw ggml bytes into a ``shape`` tensor of ``dtype`` on ``data.device`` with one Triton kernel launch.

    ``data`` is on a CUDA device (or on CPU under ``TRITON_INTERPRET=1``); same contract and errors as
    :func:`wan_accel_kernels.gguf.dequantize` for the types in ``TRITON_DEQUANTIZE_TYPES``.
    """
    qtype = resolve_qtype(qtype, TRITON_DEQUANTIZE_TYPES, "Triton dequantization")
    if dtype not in TRITON_OUTPUT_DTYPES:
        raise ValueError(f"Triton dequantization writes {', '.join(map(str, TRITON_OUTPUT_DTYPES))}, not {dtype}; "
                         "use wan_accel_kernels.gguf.dequantize for other dtypes.")
    shape = check_raw_blocks(data, qtype, shape)
    out = torch.empty(shape, dtype=dtype, device=data.device)
    launch_device = torch.cuda.device(data.device) if data.is_cuda else contextlib.nullcontext()
    with launch_device:  # launch on the data's GPU, not the current one
        launch(data.reshape(-1).contiguous(), out, qtype, traceable=False)
    return out


def launch(flat: torch.Tensor, out: torch.Tensor, qtype: QType, traceable: bool) -> None:
    """Decodes contiguous raw bytes ``flat`` of a checked ``qtype`` into ``out`` with one launch on the current device.

    ``traceable`` launches through ``torch.library.wrap_triton``, so that Inductor sees the kernel inside
    :mod:`wan_accel_kernels.gguf.custom_op`; an interpreted kernel launches raw, as torch 2.11's ``wrap_triton``
    refuses it (it runs on the CPU, where nothing is compiled). A traced launch cannot pass ``enable_fp_fusion=False``; that changes no value: the
    only multiply-adds here (Q4_K/Q5_K) add products of a 5-bit quant, an 11-bit fp16 scale and a 6-bit sub-scale,
    at most 22 significant bits, which float32 holds exactly, so a fused multiply-add rounds just as the two ops do.
    """
    n_values = out.numel()
    if n_values == 0:
        return
    raw = KERNELS[qtype]
    kernel = torch.library.wrap_triton(raw) if traceable and not interpreting() else raw
    block = INTERPRETER_VALUES_PER_PROGRAM if interpreting() else VALUES_PER_PROGRAM
    options = COMPILE_OPTIONS if kernel is raw else {}  # eager (or interpreted): the raw kernel takes them
    kernel[(triton.cdiv(n_values, block),)](flat, out, n_values, BLOCK=block, **options)
