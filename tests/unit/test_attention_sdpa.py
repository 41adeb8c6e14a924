"""kernels.attention.sdpa: exact against a reference written from the host's attention_pytorch conventions."""
import math

import pytest
import torch
import torch.nn.functional as F

from kernels.attention.sdpa import sdpa_attention


def host_attention_pytorch(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False):
    """ComfyUI 0.3.64 ``attention_pytorch`` semantics, restated (no batch chunking: it only triggers above 2**15)."""
    if skip_reshape:
        b, _, _, dim_head = q.shape
    else:
        b, _, dim_head = q.shape
        dim_head //= heads
        q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if not skip_output_reshape:
        out = out.transpose(1, 2).reshape(b, -1, heads * dim_head)
    return out


def softmax_attention_float64(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d) + mask) v in float64, [batch, heads, tokens, head_dim] in and out."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.double()
    return scores.softmax(-1) @ v


def _inputs(seed=0, batch=2, tokens=24, kv_tokens=24, heads=4, head_dim=32, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, tokens, heads * head_dim, generator=generator).to(dtype)
    k = torch.randn(batch, kv_tokens, heads * head_dim, generator=generator).to(dtype)
    v = torch.randn(batch, kv_tokens, heads * head_dim, generator=generator).to(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("skip_reshape", [False, True])
@pytest.mark.parametrize("skip_output_reshape", [False, True])
def test_bit_exact_with_the_hosts_conventions(dtype, skip_reshape, skip_output_reshape):
    q, k, v = _inputs(dtype=dtype, kv_tokens=17)
    if skip_reshape:
        q, k, v = (t.view(2, -1, 4, 32).transpose(1, 2) for t in (q, k, v))
    ours = sdpa_attention(q, k, v, 4, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    host = host_attention_pytorch(q, k, v, 4, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    assert ours.shape == host.shape == ((2, 4, 24, 32) if skip_output_reshape else (2, 24, 128))
    assert ours.dtype == dtype and torch.equal(ours, host)


@pytest.mark.parametrize("mask_shape", [(24, 17), (2, 24, 17), (2, 1, 24, 17)])
@pytest.mark.parametrize("boolean", [True, False])
def test_masks_broadcast_like_the_host(mask_shape, boolean):
    q, k, v = _inputs(kv_tokens=17)
    generator = torch.Generator().manual_seed(5)
    mask = torch.rand(mask_shape, generator=generator) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    if not boolean:
        mask = torch.zeros(mask_shape).masked_fill(~mask, float("-inf"))
    ours = sdpa_attention(q, k, v, 4, mask=mask)
    assert torch.equal(ours, host_attention_pytorch(q, k, v, 4, mask=mask))
    reference = softmax_attention_float64(*(t.view(2, -1, 4, 32).transpose(1, 2) for t in (q, k, v)),
                                          mask=mask if mask.ndim == 4 else mask.view(-1, 1, 24, 17))
    reference = reference.transpose(1, 2).reshape(2, 24, 128)
    error = float((ours.double() - reference).norm() / reference.norm())
    print(f"mask {mask_shape} {'bool' if boolean else 'additive'}: relative error vs float64 softmax {error:.2e}")
    assert error < 1e-6


def test_matches_float64_softmax_attention():
    q, k, v = _inputs(seed=3)
    ours = sdpa_attention(q, k, v, 4)
    reference = softmax_attention_float64(*(t.view(2, -1, 4, 32).transpose(1, 2) for t in (q, k, v)))
    reference = reference.transpose(1, 2).reshape(2, 24, 128)
    error = float((ours.double() - reference).norm() / reference.norm())
    print(f"float32 sdpa vs float64 softmax attention: relative error {error:.2e}")
    assert error < 1e-6


def test_uses_the_sdpa_function_it_is_given():
    seen = []

    def recording_sdpa(q, k, v, **kwargs):
        seen.append((q.shape, kwargs))
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    q, k, v = _inputs()
    assert torch.equal(sdpa_attention(q, k, v, 4, sdpa=recording_sdpa), sdpa_attention(q, k, v, 4))
    assert seen == [((2, 4, 24, 32), {"attn_mask": None, "dropout_p": 0.0, "is_causal": False})]
