"""The dequantisation reserve scales from a 64-block sample to a whole layer exactly, and counts the scratch."""
from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType as T

from wan_accel_kernels.gguf import block_geometry, dequantize
from wan_accel_kernels.gguf.memory import dequant_peak_bytes
from wan_accel_kernels.memory_probe import LiveTensorBytes


@pytest.mark.parametrize("qtype", [T.Q6_K, T.Q8_0, T.Q4_K])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_reserve_equals_the_measured_peak_of_a_layer(qtype, dtype):
    shape = (96, 1024)
    block_size, type_size = block_geometry(qtype)
    data = torch.randint(0, 256, (shape[0] * shape[1] // block_size * type_size,), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))
    with LiveTensorBytes() as counter:
        values = dequantize(data, qtype, shape, dtype)
    output = values.nbytes
    print(f"\n{qtype.name} -> {dtype}: peak {counter.peak} B for a {output} B output")
    assert dequant_peak_bytes(qtype, shape, dtype, "torch") == counter.peak
    assert counter.peak > output
    assert dequant_peak_bytes(qtype, shape, dtype, "triton") == output


def test_the_14b_ffn_reserve_in_bf16():
    shape = (13824, 5120)
    assert dequant_peak_bytes(T.Q6_K, shape, torch.bfloat16, "triton") == 13824 * 5120 * 2  # 141.6 MB
    assert round(dequant_peak_bytes(T.Q6_K, shape, torch.bfloat16, "torch") / 1e6) == 513
