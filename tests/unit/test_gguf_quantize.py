"""wan_accel_kernels.gguf.quantize: Q8_0 byte-exact with gguf-py, Q6_K byte-exact with ggml's reference quantiser.

The SHA-256 digests below are of ``quantize_row_q6_K_ref`` output from ggml/src/ggml-quants.c compiled with
``gcc -O2 -ffp-contract=off`` on the same inputs. ggml's published-style figures (N(0,1): 0.017734, Laplace x 0.02:
0.021674) are reproduced by the float64 draw ``rng.standard_normal((1024, 4096)).astype(float32)``; the float32
draw ``standard_normal(..., dtype=float32)`` is different data, on which ggml itself scores 0.0177399.
"""
import hashlib

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from wan_accel_kernels.gguf import UnsupportedQuantizationError, dequantize, quantize

GGML_Q6_K_SHA256 = {
    "normal": "93f2c40bb95f8b410005cc047e4549423646f6d32c6245de85cbcb5fbd5ffb00",
    "laplace": "9d29390bb772f8fa71de0a211d71d431502ff4d3e19be0aa6d4e39d8bfd700d3",
    "normal_f32_draw": "c46a5d9d1f74bfa473dd6f78d86fd296c597d06e2d18247ebee24e08665ca446",
    "edges": "3ce7efac98a62953769619695e77395cbf84149e44c6c7a2b74718b7ff5095c2",
}
# ggml's relative RMSE on the draws above, rounded up at the 7th significant digit.
GGML_Q6_K_RMSE = {"normal": 0.0177344, "laplace": 0.0216737, "normal_f32_draw": 0.0177399}
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


def edge_blocks() -> np.ndarray:
    """Sixteen Q6_K super-blocks exercising ggml's special cases (zero groups, ties, extreme scales)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 256), dtype=np.float32)
    a[0] = 0  # all-zero super-block
    a[1, :16] = 0  # one all-zero sub-block
    a[2, ::2] = 0
    a[3] *= 1e-6
    a[4] *= 1e3
    a[5] = np.round(a[5] * 4) / 4  # many exact ties
    a[6] = 1.0  # constant
    a[7, :128] = 0
    a[8] *= 1e-20  # below ggml's 1e-15 all-zero threshold
    a[9] = 3.0
    a[9, 5] = -3.0  # equal magnitudes, opposite signs
    a[10] = rng.laplace(size=256)
    a[11] = rng.integers(-32, 32, 256)
    return a


@pytest.fixture(scope="module")
def draws() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    normal = rng.standard_normal((1024, 4096)).astype(np.float32)
    laplace = (rng.laplace(size=(1024, 4096)) * 0.02).astype(np.float32)
    normal_f32 = np.random.default_rng(0).standard_normal((1024, 4096), dtype=np.float32)
    return {"normal": normal, "laplace": laplace, "normal_f32_draw": normal_f32, "edges": edge_blocks()}


@pytest.fixture(scope="module")
def q6_k(draws) -> dict[str, torch.Tensor]:
    return {name: quantize(torch.from_numpy(x), T.Q6_K) for name, x in draws.items()}


def relative_rmse(restored: torch.Tensor, x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.linalg.norm(restored.double().numpy() - x) / np.linalg.norm(x))


@pytest.mark.parametrize("name", list(GGML_Q6_K_SHA256))
def test_q6_k_bytes_equal_ggml_reference(q6_k, name):
    assert hashlib.sha256(q6_k[name].numpy().tobytes()).hexdigest() == GGML_Q6_K_SHA256[name]


@pytest.mark.parametrize("name", list(GGML_Q6_K_RMSE))
def test_q6_k_round_trip_rmse(draws, q6_k, name):
    x = draws[name]
    rmse = relative_rmse(dequantize(q6_k[name], T.Q6_K, x.shape), x)
    print(f"Q6_K relative RMSE on {name}: {rmse:.8f} (ggml {GGML_Q6_K_RMSE[name]})")
    assert rmse <= GGML_Q6_K_RMSE[name]


@pytest.mark.parametrize("name", ["laplace", "edges"])
def test_q6_k_decodes_identically_in_gguf_py(draws, q6_k, name):
    data = q6_k[name]
    assert data.dtype == torch.uint8 and data.shape == (draws[name].size // 256 * 210,)
    ours = dequantize(data, T.Q6_K, draws[name].shape)
    theirs = torch.from_numpy(gguf_dequantize(data.numpy().reshape(-1, 210), T.Q6_K)).reshape(ours.shape)
    assert torch.equal(ours, theirs)


def test_q6_k_zero_super_block_is_all_zero_bytes(q6_k):
    assert not q6_k["edges"][:210].any()


@pytest.mark.parametrize("device", DEVICES)
def test_q6_k_same_bytes_on_device_and_any_input_layout(draws, q6_k, device):
    x = torch.from_numpy(draws["edges"]).to(device)
    assert torch.equal(quantize(x.reshape(4, 2, 2, 256), T.Q6_K).cpu(), q6_k["edges"])
    assert torch.equal(quantize(x.T.contiguous().T, T.Q6_K).cpu(), q6_k["edges"])


def q8_0_input() -> np.ndarray:
    """N(0,1) rows plus a block of exact .5 ties (d = 1), where roundf must round away from zero."""
    x = np.random.default_rng(2).standard_normal((256, 1024), dtype=np.float32)
    x[0, :32] = np.arange(-15.5, 16.5, 1.0, dtype=np.float32)
    x[0, 0] = 127.0
    x[1, :32] = 0  # all-zero block
    return x


@pytest.mark.parametrize("device", DEVICES)
def test_q8_0_bytes_equal_gguf_py(device):
    x = q8_0_input()
    ours = quantize(torch.from_numpy(x).to(device), T.Q8_0).cpu()
    assert ours.shape == (x.size // 32 * 34,)
    assert np.array_equal(ours.numpy(), gguf_quantize(x, T.Q8_0).reshape(-1))


def test_q8_0_round_trip_rmse():
    x = np.random.default_rng(2).standard_normal((256, 1024), dtype=np.float32)
    rmse = relative_rmse(dequantize(quantize(torch.from_numpy(x), T.Q8_0), T.Q8_0, x.shape), x)
    print(f"Q8_0 relative RMSE on N(0,1): {rmse:.8f}")
    assert rmse <= 0.0054


@pytest.mark.parametrize(
    "qtype, dtype", [(T.F32, torch.float32), (T.F16, torch.float16), (T.BF16, torch.bfloat16)], ids=str
)
def test_float_types_are_byte_views(qtype, dtype):
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((3, 5, 7), dtype=np.float32))
    data = quantize(x, qtype)
    assert torch.equal(data, x.to(dtype).reshape(-1).view(torch.uint8))
    assert torch.equal(dequantize(data, qtype, x.shape, dtype=dtype), x.to(dtype))


def test_half_precision_input_is_quantised_from_its_float32_value():
    x = torch.from_numpy(edge_blocks()).to(torch.bfloat16)
    assert torch.equal(quantize(x, T.Q6_K), quantize(x.float(), T.Q6_K))


def test_quantize_rejects_partial_blocks_and_unsupported_types():
    with pytest.raises(ValueError, match=r"blocks of 256 values, but shape \(4, 100\)"):
        quantize(torch.zeros(4, 100), T.Q6_K)
    with pytest.raises(UnsupportedQuantizationError, match="GGUF type Q4_K is not supported for quantization"):
        quantize(torch.zeros(4, 256), T.Q4_K)
