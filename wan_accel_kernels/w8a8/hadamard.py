"""Block-Hadamard rotation of the input dimension, folded into the weight once and applied to activations per call.

With ``H`` the orthonormal Sylvester-Hadamard matrix of size ``b`` and ``R = diag(H, ..., H)``,
``x @ W^T = (x R) @ (W R)^T`` exactly, while ``x R`` spreads a channel's outlier over the ``b`` channels of its
block, so one token's int8 scale is no longer set by a few huge channels (QuaRot / ConvRot's idea).
The block is the largest power of two dividing the input width, capped at ``max_block`` (Wan: 5120 -> 1024,
13824 -> 512 with the default cap).
"""
from __future__ import annotations

import functools

import torch

DEFAULT_MAX_BLOCK = 1024


def block_size(in_features: int, max_block: int = DEFAULT_MAX_BLOCK) -> int:
    """Largest power of two dividing ``in_features``, at most ``max_block`` (1 means: no rotation possible)."""
    block = 1
    while in_features % (block * 2) == 0 and block * 2 <= max_block:
        block *= 2
    return block


@functools.lru_cache(maxsize=32)
def _hadamard(size: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    matrix = torch.ones(1, 1, dtype=torch.float64)
    while matrix.shape[0] < size:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return (matrix / size ** 0.5).to(device=device, dtype=dtype)


def hadamard(size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal (symmetric, self-inverse) Sylvester-Hadamard matrix of ``size``, a power of two."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a Sylvester-Hadamard matrix needs a power-of-two size, got {size}")
    return _hadamard(size, str(torch.device(device)), dtype)


def rotate(x: torch.Tensor, block: int) -> torch.Tensor:
    """``x R`` along the last dim (blocks of ``block``), in x's dtype; its own inverse."""
    if block == 1:
        return x
    width = x.shape[-1]
    if width % block:
        raise ValueError(f"cannot rotate width {width} in Hadamard blocks of {block}")
    blocks = x.reshape(*x.shape[:-1], width // block, block)
    return (blocks @ hadamard(block, x.device, x.dtype)).reshape(x.shape)
