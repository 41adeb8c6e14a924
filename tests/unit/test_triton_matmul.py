"""The fused Q6_K dequant+matmul kernel multiplies by exactly the dequantised weights and matches F.linear's error.

Without CUDA the kernel runs in Triton's CPU interpreter (``TRITON_INTERPRET=1`` set before the import); the whole
module is skipped, with the reason shown, when triton is not installed. Shapes are small: the interpreter is slow.
"""
import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed (pip install triton; CI installs it from "
                                     "requirements-test.txt)")

from wan_accel_kernels.gguf import dequantize  # noqa: E402
from wan_accel_kernels.gguf.triton_matmul import MatmulConfig, q6_k_linear  # noqa: E402
from tests.support.triton_aot import run_aot_script  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
Q6_K = 14
SMALL = MatmulConfig(block_m=16, block_n=16, block_k=64, group_m=2, num_warps=1, num_stages=1)


def random_q6_k(out_features: int, in_features: int, seed: int, scale: float = 0.001) -> torch.Tensor:
    """Random valid Q6_K bytes for a ``[out, in]`` weight: random quants and int8 sub-scales, fp16 ``d``."""
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (out_features * in_features // 256, 210), dtype=torch.uint8, generator=gen)
    d = torch.randn(blocks.shape[0], 1, generator=gen) * scale
    blocks[:, 208:] = d.to(torch.float16).view(torch.uint8)
    return blocks.reshape(-1).to(DEVICE)


def relative_l2(a: torch.Tensor, reference: torch.Tensor) -> float:
    return float((a.float() - reference).norm() / reference.norm())


def test_weights_in_the_kernel_equal_the_dequantised_weights():
    # x = identity: each output is one exact product 1 * w, so y.T is the bf16 weight the kernel decoded.
    data = random_q6_k(32, 256, seed=0)
    x = torch.eye(256, dtype=torch.bfloat16, device=DEVICE)
    y = q6_k_linear(x, data, (32, 256), config=MatmulConfig(64, 32, 64, 4, 2, 1))
    assert torch.equal(y.T, dequantize(data, Q6_K, (32, 256), torch.bfloat16))


def test_bf16_with_bias_ragged_tiles_matches_f_linear():
    # M = 48, N = 40: the last N tile and the last group of M tiles are partial; K = 512: two Q6_K blocks per row.
    data = random_q6_k(40, 512, seed=1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(48, 512, generator=gen).to(DEVICE, torch.bfloat16)
    bias = torch.randn(40, generator=gen).to(DEVICE, torch.bfloat16)
    weight = dequantize(data, Q6_K, (40, 512), torch.bfloat16)
    exact = x.double() @ weight.double().T + bias.double()

    ours = q6_k_linear(x, data, (40, 512), bias, SMALL)
    torch_error = relative_l2(F.linear(x, weight, bias), exact.float())
    ours_error = relative_l2(ours, exact.float())
    assert ours.dtype == torch.bfloat16 and ours.shape == (48, 40)
    assert ours_error < 2.5e-3 and ours_error <= torch_error * 1.1, (ours_error, torch_error)
    assert (ours == exact.to(torch.bfloat16)).float().mean() > 0.98  # bf16 of the exact result almost everywhere


def test_fp16_batched_input_without_bias():
    data = random_q6_k(32, 256, seed=2)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 24, 256, generator=gen).to(DEVICE, torch.float16)
    weight = dequantize(data, Q6_K, (32, 256), torch.float16)
    ours = q6_k_linear(x, data, (32, 256), config=SMALL)
    exact = (x.double() @ weight.double().T).float()
    assert ours.shape == (2, 24, 32) and ours.dtype == torch.float16
    assert relative_l2(ours, exact) < 1e-3
    assert (ours == exact.to(torch.float16)).float().mean() > 0.98


def test_errors_name_the_problem_and_fix():
    data = random_q6_k(16, 256, seed=3)
    x = torch.zeros(4, 256, dtype=torch.bfloat16, device=DEVICE)
    with pytest.raises(ValueError, match="bf16/fp16 activations, got torch.float32; cast x first"):
        q6_k_linear(x.float(), data, (16, 256))
    with pytest.raises(ValueError, match=r"x has 256 features but the Q6_K weight \(16, 512\) takes 512"):
        q6_k_linear(x, data, (16, 512))
    with pytest.raises(ValueError, match="block_k=96 must be >= 16 and divide 256"):
        q6_k_linear(x, data, (16, 256), config=MatmulConfig(block_k=96))
    with pytest.raises(ValueError, match=r"needs 3360 raw uint8 bytes, got 3359"):
        q6_k_linear(x, data[:-1], (16, 256))


def test_strided_weight_bytes_are_read_in_order():
    data = random_q6_k(32, 256, seed=4)
    strided = torch.zeros(2 * data.numel(), dtype=torch.uint8, device=DEVICE)[::2]  # every other byte of a buffer
    strided.copy_(data)
    assert not strided.is_contiguous()
    x = torch.eye(256, dtype=torch.bfloat16, device=DEVICE)
    y = q6_k_linear(x, strided, (32, 256), config=MatmulConfig(64, 32, 64, 4, 2, 1))
    assert torch.equal(y.T, dequantize(data, Q6_K, (32, 256), torch.bfloat16))


def test_a_bias_on_another_device_or_of_another_size_is_refused():
    data = random_q6_k(16, 256, seed=5)
    x = torch.zeros(4, 256, dtype=torch.bfloat16, device=DEVICE)
    with pytest.raises(ValueError, match=r"Q6_K matmul: the bias is on meta but x is on .*move the bias"):
        q6_k_linear(x, data, (16, 256), torch.zeros(16, device="meta"))
    with pytest.raises(ValueError, match=r"the bias has 8 values for 16 outputs"):
        q6_k_linear(x, data, (16, 256), torch.zeros(8, device=DEVICE))


AOT_SCRIPT = """
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from wan_accel_kernels.gguf import triton_dequantize as td
from wan_accel_kernels.gguf import triton_matmul as tm
config = tm.MatmulConfig()
signature = {"x": "*bf16", "w": "*u8", "bias": "*bf16", "y": "*bf16", "M": "i32", "N": "i32", "K": "i32",
             "stride_xm": "i32", "stride_ym": "i32", "HAS_BIAS": "constexpr", "BLOCK_M": "constexpr",
             "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "GROUP_M": "constexpr", "FP32_DOT": "constexpr"}
constants = {"HAS_BIAS": True, "BLOCK_M": config.block_m, "BLOCK_N": config.block_n, "BLOCK_K": config.block_k,
             "GROUP_M": config.group_m, "FP32_DOT": False}
options = dict(td.COMPILE_OPTIONS, num_warps=config.num_warps, num_stages=config.num_stages)
found = {}
for capability in (89, 90):
    compiled = triton.compile(ASTSource(tm._q6_k_linear_kernel, signature, constexprs=constants),
                              target=GPUTarget("cuda", capability, 32), options=options)
    ptx = compiled.asm["ptx"]
    found[f"sm_{capability}"] = [len(compiled.asm["cubin"]), "wgmma" in ptx, "mma.sync" in ptx]
print(json.dumps(found))
"""


def test_default_config_compiles_to_tensor_core_code_for_ada_and_hopper():
    # Ahead-of-time compilation needs no GPU: the default tiles build for sm_89 (RTX 4090: mma.sync) and sm_90
    # (H100: wgmma), which the interpreter cannot check.
    found = run_aot_script(AOT_SCRIPT)
    assert found["sm_89"][0] > 1000 and found["sm_89"][2], found
    assert found["sm_90"][0] > 1000 and found["sm_90"][1], found
