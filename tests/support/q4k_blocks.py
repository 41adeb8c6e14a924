"""A plain Q4_K encoder for test fixtures: valid ggml ``block_q4_K`` bytes, not ggml's scale search.

Our converter writes Q6_K and Q8_0 only, but community Wan GGUF files are often Q4_K(_M); the loader must read
them. Per 32-value sub-block the range [min(x, 0), max(x)] is mapped to 16 levels; the eight sub-block scales and
mins are stored as 6-bit multiples of the super-block's fp16 ``d`` and ``dmin``. Its error is a little above
ggml's (no least-squares refinement), which only makes the tests' bounds stricter on our side.
"""
from __future__ import annotations

import numpy as np

QK_K = 256
BLOCK_BYTES = 144  # fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit quants


def quantize_q4_k(array: np.ndarray) -> np.ndarray:
    """``array`` [..., n * 256] float -> raw Q4_K bytes [..., n * 144] (uint8), rows quantised independently."""
    values = np.asarray(array, dtype=np.float32)
    if values.shape[-1] % QK_K:
        raise ValueError(f"Q4_K rows must be a multiple of {QK_K} values, got {values.shape[-1]}")
    sub = values.reshape(-1, 8, 32)
    low = np.minimum(sub.min(axis=-1), 0.0)
    scale = (np.maximum(sub.max(axis=-1), 0.0) - low) / 15.0
    d = (scale.max(axis=-1) / 63.0).astype(np.float16)
    dmin = ((-low).max(axis=-1) / 63.0).astype(np.float16)
    sc = _six_bit(scale, d)
    mins = _six_bit(-low, dmin)
    step = d.astype(np.float32)[:, None] * sc
    offset = dmin.astype(np.float32)[:, None] * mins
    safe = np.where(step > 0, step, 1.0)
    q = np.clip(np.rint((sub + offset[..., None]) / safe[..., None]), 0, 15).astype(np.uint8)
    q = np.where(step[..., None] > 0, q, 0).astype(np.uint8).reshape(-1, 4, 2, 32)
    packed_q = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8),
                             _pack_scales(sc, mins), packed_q], axis=-1)
    return blocks.reshape(*values.shape[:-1], values.shape[-1] // QK_K * BLOCK_BYTES)


def _six_bit(values: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """``values`` [n, 8] as integer multiples 0..63 of ``unit`` [n] (0 where the unit is 0)."""
    unit32 = unit.astype(np.float32)[:, None]
    return np.where(unit32 > 0, np.clip(np.rint(values / np.where(unit32 > 0, unit32, 1.0)), 0, 63), 0).astype(np.uint8)


def _pack_scales(sc: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """ggml's 12-byte packing of eight 6-bit scales and mins (the inverse of ``get_scale_min_k4``)."""
    packed = np.empty((sc.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = mins[:, 0:4] | ((mins[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mins[:, 4:8] & 0x0F) << 4)
    return packed
