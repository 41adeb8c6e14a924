"""wan_accel_kernels.gguf.dequantize must equal gguf-py's numpy dequantisation bit for bit, for every supported type."""
import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from wan_accel_kernels.gguf import (
    UnsupportedQuantizationError,
    dequantize,
    dequantize_q4_0,
    dequantize_q4_1,
    dequantize_q4_k,
    dequantize_q5_0,
    dequantize_q5_1,
    dequantize_q5_k,
    dequantize_q6_k,
    dequantize_q8_0,
    tensor_nbytes,
)

# Byte offsets of the fp16 scale fields in each block type's layout.
HALF_FIELDS = {
    T.Q8_0: (0,),
    T.Q4_0: (0,),
    T.Q4_1: (0, 2),
    T.Q5_0: (0,),
    T.Q5_1: (0, 2),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}
BLOCK_FUNCTIONS = {
    T.Q8_0: dequantize_q8_0,
    T.Q4_0: dequantize_q4_0,
    T.Q4_1: dequantize_q4_1,
    T.Q5_0: dequantize_q5_0,
    T.Q5_1: dequantize_q5_1,
    T.Q4_K: dequantize_q4_k,
    T.Q5_K: dequantize_q5_k,
    T.Q6_K: dequantize_q6_k,
}
FLOAT_TYPES = {T.F32: np.float32, T.F16: np.float16, T.BF16: None}
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


def random_blocks(qtype: T, n_blocks: int, seed: int = 0) -> np.ndarray:
    """Random valid ggml bytes ``[n_blocks, type_size]``: random quants, finite fp16 scales (float types: normals)."""
    rng = np.random.default_rng(seed)
    if qtype in FLOAT_TYPES:
        values = torch.from_numpy(rng.standard_normal(n_blocks, dtype=np.float32))
        dtype = {T.F32: torch.float32, T.F16: torch.float16, T.BF16: torch.bfloat16}[qtype]
        return values.to(dtype).view(torch.uint8).numpy().reshape(n_blocks, -1)
    blocks = rng.integers(0, 256, size=(n_blocks, GGML_QUANT_SIZES[qtype][1]), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype]:
        scales = (rng.standard_normal((n_blocks, 1)) * 0.01).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8)
    return blocks


def reference(blocks: np.ndarray, qtype: T) -> torch.Tensor:
    """gguf-py's float32 dequantisation of ``[n_blocks, type_size]`` bytes, flattened."""
    return torch.from_numpy(np.ascontiguousarray(gguf_dequantize(blocks, qtype), dtype=np.float32)).reshape(-1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("qtype", [*HALF_FIELDS, *FLOAT_TYPES], ids=lambda t: t.name)
def test_bit_exact_against_gguf_py(qtype, device):
    block_size = GGML_QUANT_SIZES[qtype][0]
    blocks = random_blocks(qtype, 1024 if block_size > 1 else 65536)
    expected = reference(blocks, qtype)
    ours = dequantize(torch.from_numpy(blocks).to(device), qtype, expected.shape).cpu()
    assert ours.dtype == torch.float32
    assert torch.isfinite(expected).all()
    assert torch.equal(ours, expected), f"{(ours != expected).sum()} values differ"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("qtype", [*HALF_FIELDS, *FLOAT_TYPES], ids=lambda t: t.name)
def test_half_outputs_are_gguf_float32_cast(qtype, dtype):
    blocks = random_blocks(qtype, 256 if GGML_QUANT_SIZES[qtype][0] > 1 else 4096, seed=1)
    expected = reference(blocks, qtype).to(dtype)
    ours = dequantize(torch.from_numpy(blocks), qtype, expected.shape, dtype=dtype)
    assert ours.dtype == dtype
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("qtype", list(BLOCK_FUNCTIONS), ids=lambda t: t.name)
def test_per_type_functions_map_blocks_to_values(qtype):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    blocks = random_blocks(qtype, 64, seed=2)
    ours = BLOCK_FUNCTIONS[qtype](torch.from_numpy(blocks))
    assert ours.shape == (64, block_size) and ours.dtype == torch.float32
    assert torch.equal(ours, reference(blocks, qtype).reshape(64, block_size))


def test_int_qtype_and_2d_row_bytes_accepted():
    blocks = random_blocks(T.Q6_K, 8 * 4, seed=3)
    rows = torch.from_numpy(blocks).reshape(8, 4 * 210)  # GGUFReader layout: [rows, bytes per row]
    ours = dequantize(rows, int(T.Q6_K), (8, 1024))
    assert ours.shape == (8, 1024)
    assert torch.equal(ours.reshape(-1), reference(blocks, T.Q6_K))


@pytest.mark.parametrize("qtype", [T.F16, T.F32], ids=lambda t: t.name)
def test_5d_conv_weight_shape(qtype):
    shape = (5120, 36, 1, 2, 2)
    n = int(np.prod(shape))
    blocks = random_blocks(qtype, n, seed=4)
    ours = dequantize(torch.from_numpy(blocks), qtype, shape)
    assert ours.shape == shape
    assert torch.equal(ours.reshape(-1), reference(blocks, qtype))


def test_1d_shape_and_native_dtype_view():
    blocks = random_blocks(T.F16, 5120, seed=5)
    data = torch.from_numpy(blocks)
    ours = dequantize(data, T.F16, (5120,), dtype=torch.float16)
    assert ours.shape == (5120,) and ours.data_ptr() == data.data_ptr()  # no copy when dtype already matches
    assert torch.equal(ours.float(), reference(blocks, T.F16))


def test_float_data_at_odd_byte_offset():
    blocks = random_blocks(T.F16, 100, seed=6)
    buffer = torch.cat([torch.zeros(1, dtype=torch.uint8), torch.from_numpy(blocks).reshape(-1)])
    ours = dequantize(buffer[1:], T.F16, (10, 10))
    assert torch.equal(ours.reshape(-1), reference(blocks, T.F16))


def test_tensor_nbytes():
    assert tensor_nbytes(T.Q6_K, (5120, 13824)) == 5120 * 13824 // 256 * 210
    assert tensor_nbytes(T.F16, (5120, 36, 1, 2, 2)) == 5120 * 36 * 4 * 2
    assert tensor_nbytes(int(T.Q8_0), (64,)) == 68
    with pytest.raises(ValueError, match="blocks of 256"):
        tensor_nbytes(T.Q4_K, (4, 100))


@pytest.mark.parametrize("qtype, name", [(T.IQ2_XXS, "IQ2_XXS"), (T.Q3_K, "Q3_K"), (999, "999")])
def test_unsupported_type_is_named(qtype, name):
    with pytest.raises(UnsupportedQuantizationError, match=rf"GGUF type {name} is not supported.*supported: F32, F16"):
        dequantize(torch.zeros(66, dtype=torch.uint8), qtype, (256,))
    assert issubclass(UnsupportedQuantizationError, ValueError)


def test_wrong_byte_count_names_expected_and_actual():
    with pytest.raises(ValueError, match=r"needs 420 bytes, got 419"):
        dequantize(torch.zeros(419, dtype=torch.uint8), T.Q6_K, (2, 256))


def test_row_not_multiple_of_block_and_non_byte_data_rejected():
    with pytest.raises(ValueError, match="rows of 100"):
        dequantize(torch.zeros(210, dtype=torch.uint8), T.Q6_K, (100,))
    with pytest.raises(ValueError, match="raw uint8 bytes"):
        dequantize(torch.zeros(4, dtype=torch.float16), T.F16, (4,))
