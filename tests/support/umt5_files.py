"""Small but complete umt5 text-encoder files (random weights, width 4096) for the fp8 loader's tests.

Unlike ``tiny_models.write_umt5_stub`` (the host's full-size umt5-xxl with almost every weight absent), these
files hold every tensor of a *shallow, narrow* umt5: width 4096 (what the Wan DiT's text embedding takes),
``layers`` blocks, ``heads x d_kv`` attention, ``d_ff`` gated FFN, a ``vocab``-row embedding table and the
in-process SentencePiece tokenizer of ``tiny_models``. ``Load Text Encoder (fp8)`` builds the host's umt5
with the shape it finds in the file, so an encode runs only these weights (well under a second on CPU), the
output depends on every weight, and the Linear weights are 93% of the parameters: the file on which "resident
bytes vs a bf16 load" measures the fp8 storage itself.

Weights follow the T5 initialisation of ``transformers`` (q: ``(d_model*d_kv)^-1/2``, k/v/wi: ``d_model^-1/2``,
o: ``(heads*d_kv)^-1/2``, wo: ``d_ff^-1/2``), so activations stay O(1).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_accel_kernels.fp8.umt5_file import LINEAR_WEIGHT
from tests.support.tiny_models import TEXT_DIM, tiny_spiece_model_bytes

SMALL_UMT5 = {"layers": 2, "heads": 8, "d_kv": 16, "d_ff": 1024, "vocab": 256}


def _normal(gen: torch.Generator, out_f: int, in_f: int, std: float) -> torch.Tensor:
    return torch.randn(out_f, in_f, generator=gen) * std


def small_umt5_state_dict(layers: int = 2, heads: int = 8, d_kv: int = 16, d_ff: int = 1024, vocab: int = 256,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    """fp32 tensors of a complete width-4096 umt5 encoder with ``layers`` blocks, plus ``spiece_model``.

    A new dict each call; the tensors are shared between calls (generated once per shape): do not modify them.
    """
    return dict(_state_dict(layers, heads, d_kv, d_ff, vocab, seed))


@functools.lru_cache(maxsize=4)
def _state_dict(layers: int, heads: int, d_kv: int, d_ff: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    d, inner = TEXT_DIM, heads * d_kv
    sd: dict[str, torch.Tensor] = {"shared.weight": torch.randn(vocab, d, generator=gen)}
    for i in range(layers):
        attn, ff = f"encoder.block.{i}.layer.0", f"encoder.block.{i}.layer.1"
        sd[f"{attn}.SelfAttention.q.weight"] = _normal(gen, inner, d, (d * d_kv) ** -0.5)
        sd[f"{attn}.SelfAttention.k.weight"] = _normal(gen, inner, d, d ** -0.5)
        sd[f"{attn}.SelfAttention.v.weight"] = _normal(gen, inner, d, d ** -0.5)
        sd[f"{attn}.SelfAttention.o.weight"] = _normal(gen, d, inner, inner ** -0.5)
        sd[f"{attn}.SelfAttention.relative_attention_bias.weight"] = torch.randn(32, heads, generator=gen) * 0.5
        sd[f"{attn}.layer_norm.weight"] = 1.0 + 0.1 * torch.randn(d, generator=gen)
        sd[f"{ff}.DenseReluDense.wi_0.weight"] = _normal(gen, d_ff, d, d ** -0.5)
        sd[f"{ff}.DenseReluDense.wi_1.weight"] = _normal(gen, d_ff, d, d ** -0.5)
        sd[f"{ff}.DenseReluDense.wo.weight"] = _normal(gen, d, d_ff, d_ff ** -0.5)
        sd[f"{ff}.layer_norm.weight"] = 1.0 + 0.1 * torch.randn(d, generator=gen)
    sd["encoder.final_layer_norm.weight"] = 1.0 + 0.1 * torch.randn(d, generator=gen)
    spiece = tiny_spiece_model_bytes(vocab_size=200, seed=seed)
    sd["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8).clone()
    return sd


def write_small_umt5(path: str | os.PathLike, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                     drop: tuple[str, ...] = (), **shape) -> Path:
    """Write :func:`small_umt5_state_dict` with float tensors in ``dtype`` (keys in ``drop`` left out)."""
    sd = small_umt5_state_dict(seed=seed, **{**SMALL_UMT5, **shape})
    out = {k: (v if v.dtype == torch.uint8 else v.to(dtype)).contiguous() for k, v in sd.items() if k not in drop}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return path


def write_scaled_fp8_umt5(path: str | os.PathLike, seed: int = 0) -> Path:
    """The same encoder in the host's "scaled fp8" layout: e4m3fn Linear weights, scalar ``scale_weight``."""
    sd = small_umt5_state_dict(seed=seed, **SMALL_UMT5)
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in sd.items():
        if value.dtype == torch.uint8:
            out[key] = value
        elif LINEAR_WEIGHT.match(key):
            scale = value.abs().amax() / 448.0
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[:-len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = value.to(torch.bfloat16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return path
