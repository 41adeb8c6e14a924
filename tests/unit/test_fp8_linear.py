"""The fp8 Linear: equals a float Linear on the dequantised weight; its error against the exact layer is e4m3's."""
from __future__ import annotations

import torch

from wan_accel_kernels.fp8 import FP8_DTYPE, Fp8Linear, quantize, quantize_linears, scaled_linear


def _rel(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.float() - exact.float()).norm() / exact.float().norm())


def _linear(in_f: int = 256, out_f: int = 384, bias: bool = True, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(in_f, out_f, bias=bias)


def test_scaled_linear_is_a_linear_on_the_dequantised_weight():
    layer = _linear()
    weight, bias = layer.weight.detach(), layer.bias.detach()
    q, scale = quantize(weight, "per_row")
    x = torch.randn(3, 7, 256)
    expected = torch.nn.functional.linear(x, q.float() * scale.reshape(-1, 1), bias)
    got = scaled_linear(x, q, scale, bias, compute_dtype=torch.float32)
    assert got.dtype == torch.float32 and got.shape == (3, 7, 384)
    assert _rel(got, expected) < 1e-6


def test_fp8_linear_error_against_the_exact_layer():
    layer = _linear(bias=False)
    x = torch.randn(16, 256)
    with torch.no_grad():
        exact = layer(x)
    errors = {}
    for name, compute in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        fp8 = Fp8Linear.from_linear(layer, "per_row", compute_dtype=compute)
        out = fp8(x)
        assert out.dtype == torch.float32 and fp8.weight.dtype == FP8_DTYPE
        errors[name] = (_rel(out, exact), float(torch.nn.functional.cosine_similarity(out, exact, dim=-1).min()))
    print(f"\nfp8 Linear 256->384 vs fp32: compute fp32 rel {errors['fp32'][0]:.5f} (worst cos "
          f"{errors['fp32'][1]:.6f}); compute bf16 rel {errors['bf16'][0]:.5f} (worst cos {errors['bf16'][1]:.6f})")
    assert 0.015 < errors["fp32"][0] < 0.035 and errors["fp32"][1] > 0.999
    assert errors["bf16"][0] < errors["fp32"][0] + 0.005


def test_bias_and_dtype_follow_the_input():
    layer = _linear()
    fp8 = Fp8Linear.from_linear(layer)
    x = torch.randn(4, 256, dtype=torch.bfloat16)
    out = fp8(x)
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        assert _rel(out, layer(x.float())) < 0.04
    torch.testing.assert_close(fp8.bias, layer.bias.detach())
    torch.testing.assert_close(fp8.dequantized_weight(), layer.weight.detach(), rtol=0.07, atol=1e-3)


def test_quantize_linears_replaces_every_linear_and_halves_the_weight_bytes():
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024, bias=False), torch.nn.GELU(),
                                torch.nn.Sequential(torch.nn.Linear(1024, 512, bias=False)))
    bf16_bytes = sum(p.numel() * 2 for p in model.parameters())
    assert quantize_linears(model) == 2
    assert isinstance(model[0], Fp8Linear) and isinstance(model[2][0], Fp8Linear)
    fp8_bytes = sum(b.nbytes for b in model.buffers())
    print(f"\nweights + per-row scales {fp8_bytes} B vs bf16 {bf16_bytes} B: ratio {fp8_bytes / bf16_bytes:.4f}")
    assert fp8_bytes / bf16_bytes < 0.505  # 1 byte per weight + a 4-byte scale per row


def _overflowing_fp16_case():
    """A weight of amax 1e-3 (so |q| reaches 448) and fp16 inputs of 16: ``x @ q^T`` is about 1.8e6, past fp16's
    65504, while the scaled output is about 4."""
    weight = torch.full((8, 256), 1e-3)
    weight[1::2] *= -0.5
    q, scale = quantize(weight, "per_row")
    x = torch.full((4, 256), 16.0, dtype=torch.float16)
    unscaled = x.float() @ q.float().T
    assert unscaled.abs().max() > torch.finfo(torch.float16).max
    return x, q, scale, (x.float() @ weight.T)


def test_fp16_compute_scales_before_the_product_can_overflow():
    x, q, scale, exact = _overflowing_fp16_case()
    y = scaled_linear(x, q, scale, compute_dtype=torch.float16)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert _rel(y, exact) < 2e-3, _rel(y, exact)


def test_fp16_input_with_bf16_compute_scales_before_the_cast_to_fp16():
    x, q, scale, exact = _overflowing_fp16_case()
    y = scaled_linear(x, q, scale, compute_dtype=torch.bfloat16)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert _rel(y, exact) < 1e-2, _rel(y, exact)
