"""float8_e4m3fn weight scaling: per-row vs per-tensor error, exactness where values are representable, file imports."""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.fp8 import FP8_DTYPE, FP8_MAX, dequantize, quantize, weight_from_file, weight_scale
from wan_accel_kernels.fp8 import scaling


def _rel_rmse(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.float() - exact.float()).norm() / exact.float().norm())


def _gaussian(rows: int = 256, cols: int = 512, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def test_per_row_scale_maps_every_row_maximum_to_448():
    weight = _gaussian() * torch.linspace(0.01, 3.0, 256).reshape(-1, 1)
    q, scale = quantize(weight, "per_row")
    assert q.dtype == FP8_DTYPE and scale.shape == (256,) and scale.dtype == torch.float32
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((256,), FP8_MAX))
    torch.testing.assert_close(scale, weight.abs().amax(dim=1) / FP8_MAX)


def test_gaussian_weight_error_is_the_e4m3_rounding_error():
    weight = _gaussian()
    errors = {g: _rel_rmse(dequantize(*quantize(weight, g)), weight) for g in ("per_row", "per_tensor")}
    print(f"\nN(0,1) 256x512 relative RMSE: per_row {errors['per_row']:.5f}, per_tensor {errors['per_tensor']:.5f}")
    assert 0.020 < errors["per_row"] < 0.030  # 3 mantissa bits, round to nearest: ~2.6 %
    assert errors["per_row"] <= errors["per_tensor"] < 0.031


def test_per_row_beats_per_tensor_when_row_magnitudes_span_decades():
    weight = _gaussian() * torch.logspace(-6, 0, 256).reshape(-1, 1)
    small_rows = slice(0, 64)
    small = {g: _rel_rmse(dequantize(*quantize(weight, g))[small_rows], weight[small_rows])
             for g in ("per_row", "per_tensor")}
    whole = {g: _rel_rmse(dequantize(*quantize(weight, g)), weight) for g in ("per_row", "per_tensor")}
    print(f"\nrows spanning 1e-6..1: relative RMSE per_row {whole['per_row']:.5f} per_tensor "
          f"{whole['per_tensor']:.5f}; smallest quarter of rows: per_row {small['per_row']:.4f} "
          f"per_tensor {small['per_tensor']:.4f} (per-tensor pushes them below e4m3's subnormals)")
    assert small["per_row"] < 0.03
    assert small["per_tensor"] > 10 * small["per_row"]


def test_representable_values_round_trip_exactly():
    values = torch.tensor([[448.0, -1.0, 0.5, 0.0, 0.015625, -0.001953125, 240.0, 3.5]])
    q, scale = quantize(values, "per_row")
    assert float(scale) == 1.0
    assert torch.equal(dequantize(q, scale), values)


def test_zero_rows_get_scale_one_and_non_finite_weights_are_refused():
    weight = torch.zeros(3, 8)
    weight[1] = 2.0
    q, scale = quantize(weight, "per_row")
    assert torch.equal(scale, torch.tensor([1.0, 2.0, 1.0]) / torch.tensor([1.0, FP8_MAX, 1.0]))
    assert torch.equal(dequantize(q, scale), weight)
    with pytest.raises(ValueError, match="inf or NaN"):
        weight_scale(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="granularity"):
        weight_scale(weight, "per_block")


def test_chunked_quantisation_equals_one_shot(monkeypatch):
    weight = _gaussian(rows=300, cols=64, seed=3).to(torch.bfloat16)
    q_once, s_once = quantize(weight, "per_row")
    monkeypatch.setattr(scaling, "CHUNK_ELEMENTS", 7 * 64)
    assert scaling._row_chunks(300, 64).step == 7
    for granularity in ("per_row", "per_tensor"):
        q_chunks, s_chunks = quantize(weight, granularity)
        if granularity == "per_row":
            assert torch.equal(q_chunks.view(torch.uint8), q_once.view(torch.uint8)) and torch.equal(s_chunks, s_once)
        else:
            assert torch.equal(s_chunks, weight.float().abs().amax() / FP8_MAX)
    reference = (weight.float() / (weight.float().abs().amax(1, keepdim=True) / FP8_MAX)).to(FP8_DTYPE)
    assert torch.equal(q_once.view(torch.uint8), reference.view(torch.uint8))


def test_e4m3_file_weights_are_kept_byte_for_byte_with_their_scale():
    weight = _gaussian(rows=16, cols=32)
    stored = (weight / 0.01).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    q, scale = weight_from_file(stored, torch.tensor(0.01), "per_row")
    assert torch.equal(q.view(torch.uint8), stored.view(torch.uint8)) and q.data_ptr() != stored.data_ptr()
    assert torch.equal(scale, torch.full((16,), 0.01))
    q, scale = weight_from_file(stored, None, "per_tensor")
    assert torch.equal(q.view(torch.uint8), stored.view(torch.uint8)) and scale.shape == () and float(scale) == 1.0


def test_other_file_precisions_are_requantised():
    weight = _gaussian(rows=64, cols=128, seed=5)
    e5m2 = weight.to(torch.float8_e5m2)
    q, scale = weight_from_file(e5m2, torch.tensor(2.0), "per_row")
    assert q.dtype == FP8_DTYPE
    assert _rel_rmse(dequantize(q, scale), e5m2.float() * 2.0) < 0.03
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        q, scale = weight_from_file(weight.to(dtype), None, "per_row")
        assert _rel_rmse(dequantize(q, scale), weight) < 0.03


def test_sixteen_bit_fallback_storage_keeps_the_values_with_unit_scale():
    weight = _gaussian(rows=8, cols=16).to(torch.float16)
    q, scale = weight_from_file(weight, None, "per_row", storage_dtype=torch.float16)
    assert q.dtype == torch.float16 and torch.equal(q, weight) and torch.equal(scale, torch.ones(8))
    q, scale = quantize(weight.float(), "per_tensor", storage_dtype=torch.bfloat16)
    assert q.dtype == torch.bfloat16 and scale.shape == () and float(scale) == 1.0
