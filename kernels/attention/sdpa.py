"""PyTorch SDPA with ComfyUI's attention calling conventions: the exact path every fallback takes."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

SdpaFunction = Callable[..., torch.Tensor]


def to_hnd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, skip_reshape: bool) -> tuple:
    """q, k, v as [batch, heads, tokens, head_dim] views (the host passes [batch, tokens, heads * head_dim]
    unless ``skip_reshape``)."""
    if skip_reshape:
        return q, k, v
    batch, head_dim = q.shape[0], q.shape[-1] // heads
    return tuple(t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))


def from_hnd(out: torch.Tensor, skip_output_reshape: bool) -> torch.Tensor:
    """The output in the host's layout: [batch, tokens, heads * head_dim] unless ``skip_output_reshape``."""
    if skip_output_reshape:
        return out
    batch, heads, tokens, head_dim = out.shape
    return out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def broadcast_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A [tokens_q, tokens_k] or [batch, tokens_q, tokens_k] mask as [batch, heads, tokens_q, tokens_k], as the host."""
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    return mask


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: Optional[torch.Tensor] = None,
                   skip_reshape: bool = False, skip_output_reshape: bool = False,
                   sdpa: SdpaFunction = F.scaled_dot_product_attention) -> torch.Tensor:
    """Attention by ``sdpa`` (default torch's; the node passes the host's, which pins the CUDA kernel priority),
    taking and returning tensors exactly as ComfyUI's ``attention_pytorch`` does."""
    q, k, v = to_hnd(q, k, v, heads, skip_reshape)
    out = sdpa(q, k, v, attn_mask=broadcast_mask(mask), dropout_p=0.0, is_causal=False)
    return from_hnd(out, skip_output_reshape)
