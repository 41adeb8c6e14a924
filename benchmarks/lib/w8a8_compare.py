"""Error of W8A8 linears against the exact path at Wan 2.1 14B shapes, beside Q6_K dequant-then-bf16.

The inputs mimic the DiT's: tokens with a few channels 20-50x the rest (what modulated LayerNorm outputs look
like), and post-GELU activations for the FFN down projection. Weights are Laplace(0, 0.02) draws, heavier-tailed
than a Gaussian and so harder for per-channel int8. The exact path is float32 ``x @ w^T`` with the original weight;
every candidate gets the bf16-rounded input, as the DiT feeds them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType

from wan_accel_kernels.gguf import dequantize, quantize
from wan_accel_kernels.w8a8.formats import FORMATS, INT8
from wan_accel_kernels.w8a8.linear import linear
from wan_accel_kernels.w8a8.outliers import HADAMARD, METHODS, NONE, SMOOTHQUANT, default_method
from wan_accel_kernels.w8a8.weight import quantize_weight

WAN_LINEARS = (("attn q/k/v/o 5120->5120", 5120, 5120, False),
               ("ffn up 5120->13824", 5120, 13824, False),
               ("ffn down 13824->5120", 13824, 5120, True))
"""(name, in, out, post-GELU input) of the block linears of Wan 2.1 14B."""
OUTLIER_CHANNELS, OUTLIER_GAIN, OUTLIER_SEED = 8, (20.0, 50.0), 1000
SMALL_BLOCK = 128


@dataclass(frozen=True)
class ErrorRow:
    """One candidate's output error on one layer: relative L2 and cosine similarity against the exact path."""

    layer: str
    path: str
    relative_l2: float
    cosine: float


def errors(out: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(relative L2, cosine similarity) of ``out`` against ``reference``, in float64."""
    out, reference = out.double().flatten(), reference.double().flatten()
    return float((out - reference).norm() / reference.norm()), float(F.cosine_similarity(out, reference, dim=0))


def laplace(shape: tuple[int, ...], scale: float, generator: torch.Generator) -> torch.Tensor:
    """Laplace(0, ``scale``) samples in float32."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5
    return (-scale * u.sign() * torch.log1p(-2 * u.abs())).to(torch.float32)


def dit_activations(tokens: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) tokens of per-token magnitude 0.5-2x, with ``OUTLIER_CHANNELS`` channels 20-50x larger; which
    channels is fixed per width (a layer's outlier channels do not move between inputs), the gains per draw."""
    x = torch.randn(tokens, width, generator=generator) * (0.5 + 1.5 * torch.rand(tokens, 1, generator=generator))
    layer = torch.Generator().manual_seed(OUTLIER_SEED + width)
    channels = torch.randperm(width, generator=layer)[:OUTLIER_CHANNELS]
    low, high = OUTLIER_GAIN
    x[:, channels] *= low + (high - low) * torch.rand(OUTLIER_CHANNELS, generator=generator)
    return x


def post_gelu_activations(tokens: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """GELU(tanh) of DiT-like pre-activations: mostly small and skewed positive, a few huge channels."""
    return F.gelu(dit_activations(tokens, width, generator), approximate="tanh")


def layer_inputs(width: int, tokens: int, post_gelu: bool, seed: int) -> torch.Tensor:
    """The test input of one layer (``seed`` picks the draw; calibration uses another seed)."""
    generator = torch.Generator().manual_seed(seed)
    return (post_gelu_activations if post_gelu else dit_activations)(tokens, width, generator)


def gguf_roundtrip(w: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """``w`` quantised to ``qtype`` (Q6_K: the winner's file) and dequantised to float32."""
    return dequantize(quantize(w, qtype), qtype, tuple(w.shape))


def layer_errors(name: str, in_features: int, out_features: int, post_gelu: bool, tokens: int,
                 seed: int = 0) -> list[ErrorRow]:
    """Every candidate's error on one layer: bf16 weights, Q6_K, naive per-token W8A8 (no centring, no outlier
    handling), each format x outlier method (tokens centred), and the loader's path (from the Q6_K weight)."""
    w = laplace((out_features, in_features), 0.02, torch.Generator().manual_seed(seed + 1))
    x = layer_inputs(in_features, tokens, post_gelu, seed)
    calibration = layer_inputs(in_features, tokens, post_gelu, seed + 100).abs().amax(dim=0)
    reference, xb = x @ w.t(), x.to(torch.bfloat16)
    w_q6k = gguf_roundtrip(w, GGMLQuantizationType.Q6_K)
    rows = [ErrorRow(name, "bf16 weights (16-bit floor)", *errors(F.linear(xb, w.to(torch.bfloat16)), reference)),
            ErrorRow(name, "Q6_K dequant + bf16 (winner)", *errors(F.linear(xb, w_q6k.to(torch.bfloat16)), reference))]
    for fmt in FORMATS:
        naive = quantize_weight(w, fmt, NONE, center=False)
        rows.append(ErrorRow(name, f"{fmt} naive per-token", *errors(linear(xb, naive), reference)))
        for method in METHODS:
            weight = quantize_weight(w, fmt, method, act_absmax=calibration if method == SMOOTHQUANT else None)
            rows.append(ErrorRow(name, f"{fmt} {method}", *errors(linear(xb, weight), reference)))
    small = quantize_weight(w, INT8, HADAMARD, max_block=SMALL_BLOCK)
    rows.append(ErrorRow(name, f"{INT8} {HADAMARD} block {SMALL_BLOCK}", *errors(linear(xb, small), reference)))
    uncentred = quantize_weight(w, INT8, HADAMARD, center=False)
    rows.append(ErrorRow(name, f"{INT8} {HADAMARD} without centring", *errors(linear(xb, uncentred), reference)))
    for qtype in (GGMLQuantizationType.Q6_K, GGMLQuantizationType.Q8_0):
        source = w_q6k if qtype == GGMLQuantizationType.Q6_K else gguf_roundtrip(w, qtype)
        from_file = quantize_weight(source, INT8)
        rows.append(ErrorRow(name, f"{INT8} {default_method(INT8)} from {qtype.name} (loader)",
                             *errors(linear(xb, from_file), reference)))
    return rows


def wan_layer_errors(tokens: int, seed: int = 0) -> list[ErrorRow]:
    """:func:`layer_errors` for the three Wan 2.1 14B block linear shapes."""
    return [row for name, k, n, gelu in WAN_LINEARS for row in layer_errors(name, k, n, gelu, tokens, seed)]
