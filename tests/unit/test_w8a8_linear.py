"""wan_accel_kernels.w8a8: exact int8 accumulation and padding, per-channel/per-token scales, the Hadamard identity, the fp8
emulation against the real ``torch._scaled_mm``, packing through host casts, outlier detection, support reasons."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wan_accel_kernels.w8a8 import METHODS, block_size, linear, matmul_support, pack, quantize_weight, rotate, unpack
from wan_accel_kernels.w8a8.formats import FP8_DTYPE, quantize_rows
from wan_accel_kernels.w8a8.hadamard import hadamard
from wan_accel_kernels.w8a8.matmul import emulated_fp8_matmul, int8_matmul, padded
from wan_accel_kernels.w8a8.outliers import outlier_columns


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("m, k, n", [(5, 13, 7), (64, 256, 96), (17, 40, 24)])
def test_int8_matmul_is_exact_integer_arithmetic_at_any_shape(m, k, n):
    generator = torch.Generator().manual_seed(m)
    qx = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=generator)
    qw = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=generator)
    sx, sw = torch.rand(m, generator=generator) + 0.5, torch.rand(n, generator=generator) + 0.5
    exact = (qx.double() @ qw.double().t()) * sx.double()[:, None] * sw.double()[None, :]
    out = int8_matmul(qx, sx, qw, sw)
    assert out.shape == (m, n) and out.dtype == torch.float32
    assert torch.allclose(out.double(), exact, rtol=1e-6, atol=0)
    a, b = padded(qx, qw, "int8")
    assert a.shape[0] > 16 and a.shape[1] % 8 == 0 and b.shape[0] % 8 == 0 and b.shape[1] == a.shape[1]


def test_weight_scales_are_per_output_channel_and_bound_the_rounding_error():
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1))
    w[3] *= 100  # one loud channel must not coarsen the others
    weight = quantize_weight(w, "int8", "none", center=False)
    assert weight.data.dtype == torch.int8 and weight.scale.shape == (48,)
    assert torch.allclose(weight.scale, w.abs().amax(dim=1) / 127)
    error = (weight.dequantize() - w).abs()
    assert bool((error <= weight.scale[:, None] / 2 + 1e-7).all())
    assert float(error[0].max()) < float(w[0].abs().max()) / 200


def test_activation_scales_are_per_token():
    x = torch.randn(4, 32) * torch.tensor([[1.0], [10.0], [100.0], [0.0]])
    q, scale = quantize_rows(x, "int8")
    assert torch.allclose(scale[:3], x[:3].abs().amax(dim=1) / 127) and float(scale[3]) == 1.0
    assert int(q[3].abs().max()) == 0 and int(q[:3].abs().amax(dim=1).min()) == 127


def test_hadamard_blocks_are_orthonormal_and_preserve_the_product():
    assert (block_size(5120), block_size(13824), block_size(5120, 128), block_size(36)) == (1024, 512, 128, 4)
    h = hadamard(64)
    assert torch.allclose(h @ h.t(), torch.eye(64), atol=1e-6)
    generator = torch.Generator().manual_seed(2)
    x, w = torch.randn(8, 256, generator=generator, dtype=torch.float64), torch.randn(16, 256, dtype=torch.float64)
    assert torch.allclose(rotate(x, 64) @ rotate(w, 64).t(), x @ w.t())
    assert torch.allclose(rotate(rotate(x, 64), 64), x)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize("method", METHODS)
def test_linear_matches_f_linear_keeps_dtype_shape_and_bias(fmt, method):
    generator = torch.Generator().manual_seed(3)
    w, bias = torch.randn(96, 128, generator=generator) * 0.05, torch.randn(96, generator=generator)
    x = torch.randn(2, 20, 128, generator=generator).to(torch.bfloat16)
    weight = quantize_weight(w, fmt, method, act_absmax=x.float().abs().amax(dim=(0, 1)))
    out = linear(x, weight, bias)
    reference = F.linear(x.float(), w, bias)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 20, 96)
    assert _rel(out, reference) < (0.02 if fmt == "int8" else 0.06)
    assert _rel(linear(x, weight), reference - bias) < (0.02 if fmt == "int8" else 0.06)


def test_fp8_emulation_matches_torch_scaled_mm_on_cpu():
    generator = torch.Generator().manual_seed(4)
    qx, sx = quantize_rows(torch.randn(32, 64, generator=generator), "fp8")
    qw, sw = quantize_rows(torch.randn(48, 64, generator=generator), "fp8")
    try:
        real = torch._scaled_mm(qx, qw.t(), scale_a=sx[:, None].contiguous(), scale_b=sw[None, :].contiguous(),
                                out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"torch {torch.__version__} has no row-wise _scaled_mm on CPU ({error})")
    emulated = emulated_fp8_matmul(qx, sx, qw, sw)
    assert qx.dtype == FP8_DTYPE
    assert torch.allclose(emulated, real.float(), rtol=2 ** -7, atol=1e-6)


def test_packing_survives_the_hosts_float_casts():
    weight = quantize_weight(torch.randn(40, 24), "int8")
    packed = pack(weight)
    assert packed.dtype == torch.uint8 and packed.shape == (40 + 14, 24)
    for cast in (torch.float32, torch.float16, torch.bfloat16):
        back = unpack(packed.to(cast), "int8", 40, weight.method, weight.block)
        assert torch.equal(back.data, weight.data) and torch.equal(back.scale, weight.scale)
        assert torch.equal(back.row_sum, weight.row_sum)
    fp8 = quantize_weight(torch.randn(40, 24), "fp8")
    back = unpack(pack(fp8).to(torch.bfloat16), "fp8", 40, fp8.method, fp8.block)
    assert torch.equal(back.data.view(torch.uint8), fp8.data.view(torch.uint8))
    plain = quantize_weight(torch.randn(40, 24), "int8", center=False)
    assert pack(plain).shape == (47, 24) and unpack(pack(plain), "int8", 40, plain.method, plain.block,
                                                     centred=False).row_sum is None
    with pytest.raises(ValueError, match="shape"):
        unpack(packed[:-1], "int8", 40, weight.method, weight.block)
    smooth = quantize_weight(torch.randn(8, 16), "int8", "smoothquant", act_absmax=torch.ones(16))
    with pytest.raises(ValueError, match="hadamard"):
        pack(smooth)


def test_outlier_columns_are_the_loud_channels():
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(5))
    x[:, [3, 300]] *= 40
    assert sorted(outlier_columns(x).tolist()) == [3, 300]
    assert outlier_columns(torch.randn(64, 512, generator=torch.Generator().manual_seed(6))).numel() == 0


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="int8"):
        quantize_weight(torch.randn(4, 4), "int4")
    with pytest.raises(ValueError, match="hadamard"):
        quantize_weight(torch.randn(4, 4), "int8", "gptq")
    with pytest.raises(ValueError, match="act_absmax"):
        quantize_weight(torch.randn(4, 4), "int8", "smoothquant")
    with pytest.raises(ValueError, match="width"):
        linear(torch.randn(2, 8), quantize_weight(torch.randn(4, 4)))


def test_cpu_support_reasons():
    assert matmul_support("cpu", "int8").native
    fp8 = matmul_support("cpu", "fp8")
    assert not fp8.native and "emulated" in fp8.reason


def test_centring_takes_a_tokens_mean_out_of_the_8_bit_range():
    generator = torch.Generator().manual_seed(7)
    w = torch.randn(32, 64, generator=generator)
    x = 5 + 0.1 * torch.randn(16, 64, generator=generator)  # mean 50x the spread, like post-GELU's skew
    reference = x @ w.t()
    centred, plain = quantize_weight(w, "int8"), quantize_weight(w, "int8", center=False)
    assert _rel(linear(x, centred), reference) < _rel(linear(x, plain), reference) / 3
    constant = torch.full((3, 64), 2.0)
    assert torch.allclose(linear(constant, centred), 2.0 * centred.row_sum.expand(3, 32), rtol=1e-6)


def test_a_gpu_without_cuda_is_reported_not_native():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    support = matmul_support("cuda", "int8")
    assert not support.native and "CUDA is not available" in support.reason
