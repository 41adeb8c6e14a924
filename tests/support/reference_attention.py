"""The host's attention function as the override receives it (``original``), restated for unit tests.

``RecordingAttention`` follows ComfyUI's ``attention_pytorch`` conventions (q, k, v as [batch, tokens, heads *
head_dim] unless ``skip_reshape``; mask broadcast to [batch, heads, q, k]; ``scale`` and ``enable_gqa`` passed to
SDPA) and records the keyword arguments of every call, so tests can check what the override handed on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class RecordingAttention:
    """A stand-in for the host's attention function that records each call's keyword arguments."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                 **kwargs) -> torch.Tensor:
        self.calls.append({"mask": mask, "attn_precision": attn_precision, "skip_reshape": skip_reshape,
                           "skip_output_reshape": skip_output_reshape, **kwargs})
        return host_attention(q, k, v, heads, mask, attn_precision, skip_reshape, skip_output_reshape, **kwargs)


def host_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                   **kwargs) -> torch.Tensor:
    """The host attention function's signature over :func:`reference_attention` (extra arguments ignored)."""
    return reference_attention(q, k, v, heads, mask, skip_reshape, skip_output_reshape, scale=kwargs.get("scale"),
                               enable_gqa=kwargs.get("enable_gqa", False))


def reference_attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, scale=None,
                        enable_gqa=False) -> torch.Tensor:
    """``attention_pytorch``'s result for these arguments (no batch chunking: the host chunks only above 2**15)."""
    if skip_reshape:
        batch, head_dim = q.shape[0], q.shape[-1]
    else:
        batch, head_dim = q.shape[0], q.shape[-1] // heads
        q = q.reshape(batch, -1, heads, head_dim).transpose(1, 2)
        kv_heads = k.shape[-1] // head_dim
        k, v = (t.reshape(batch, -1, kv_heads, head_dim).transpose(1, 2) for t in (k, v))
    if mask is not None:
        mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
        mask = mask.unsqueeze(1) if mask.ndim == 3 else mask
    extra = {"scale": scale} if scale is not None else {}
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                         enable_gqa=enable_gqa, **extra)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(batch, -1, out.shape[1] * head_dim)
