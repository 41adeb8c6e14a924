"""The sizes of one Wan 2.2 I2V A14B expert's block linears and their Q6_K bytes (the part a switch moves).

Each expert is a Wan 2.1 14B DiT without the CLIP-vision branch: 40 blocks of self- and cross-attention q, k, v, o
(5120 x 5120) and an FFN (13824 x 5120, 5120 x 13824), stored as Q6_K blocks (210 bytes per 256 weights).
"""
from __future__ import annotations

DIM, FFN, BLOCKS = 5120, 13824, 40
Q6_K_BYTES_PER_256 = 210
BLOCK_LINEARS = {**{f"self_attn.{p}": (DIM, DIM) for p in "qkvo"}, **{f"cross_attn.{p}": (DIM, DIM) for p in "qkvo"},
                 "ffn.0": (FFN, DIM), "ffn.2": (DIM, FFN)}


def q6_k_bytes(rows: int, columns: int) -> int:
    """Bytes of a rows x columns weight in Q6_K."""
    return rows * columns // 256 * Q6_K_BYTES_PER_256


def expert_q6_k_bytes(blocks: int = BLOCKS) -> int:
    """Bytes of ``blocks`` Wan 2.2 expert blocks' linears in Q6_K (the part of an expert a switch moves)."""
    return blocks * sum(q6_k_bytes(*shape) for shape in BLOCK_LINEARS.values())
