"""Triton GGUF dequantisation equals the torch path (wan_accel_kernels.gguf.dequantize) bit for bit, and the backend picks paths.

Without CUDA the kernels run in Triton's CPU interpreter: ``TRITON_INTERPRET=1`` is set here, before the kernels
module is imported. Tests that need triton are skipped, with the reason shown, when it is not installed.
"""
import importlib.util
import logging
import os
import types

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from wan_accel_kernels.gguf import UnsupportedQuantizationError, dequantize
from wan_accel_kernels.gguf import backend, custom_op
from tests.support.triton_aot import run_aot_script
from wan_accel_kernels.gguf.path_record import DequantRecord, active_record, recording

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton; CI installs "
                                                         "it from requirements-test.txt)")
if HAS_TRITON:
    from wan_accel_kernels.gguf import triton_dequantize as td

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF_FIELDS = {T.Q8_0: (0,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def random_blocks(qtype: T, n_blocks: int, seed: int = 0, scale: float = 0.01) -> torch.Tensor:
    """Random valid ggml bytes ``[n_blocks, type_size]``: random quants and sub-scales, finite fp16 scales."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, GGML_QUANT_SIZES[qtype][1]), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype]:
        scales = (rng.standard_normal((n_blocks, 1)) * scale).astype(np.float16)
        blocks[:, offset: offset + 2] = scales.view(np.uint8)
    return torch.from_numpy(blocks)


def shape_of(qtype: T, n_blocks: int) -> tuple:
    block_size = GGML_QUANT_SIZES[qtype][0]
    return (n_blocks * block_size // 256, 256)


@pytest.fixture(autouse=True)
def _clean_backend(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    monkeypatch.setattr(backend, "_logged", set())
    monkeypatch.setattr(backend, "UNOWNED", backend.TritonFailures())


@needs_triton
def test_kernels_run_on_gpu_or_in_the_interpreter():
    assert td.interpreting() == (DEVICE == "cpu"), "triton_dequantize was imported before TRITON_INTERPRET=1 was set"


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("qtype", list(HALF_FIELDS), ids=lambda t: t.name)
def test_bit_exact_against_torch_path(qtype, dtype):
    blocks = random_blocks(qtype, 64, seed=int(qtype)).to(DEVICE)
    shape = shape_of(qtype, 64)
    ours = td.triton_dequantize(blocks, qtype, shape, dtype)
    expected = dequantize(blocks, qtype, shape, dtype)
    assert ours.dtype == dtype and ours.shape == shape and ours.device == blocks.device
    assert torch.isfinite(expected).all()
    assert torch.equal(ours, expected), f"{(ours != expected).sum().item()} of {ours.numel()} values differ"


@needs_triton
@pytest.mark.parametrize("qtype", list(HALF_FIELDS), ids=lambda t: t.name)
def test_float32_equals_gguf_py(qtype):
    blocks = random_blocks(qtype, 32, seed=7)
    expected = torch.from_numpy(np.ascontiguousarray(gguf_dequantize(blocks.numpy(), qtype), dtype=np.float32))
    ours = td.triton_dequantize(blocks.to(DEVICE), qtype, shape_of(qtype, 32), torch.float32).cpu()
    assert torch.equal(ours.reshape(-1), expected.reshape(-1))


@needs_triton
@pytest.mark.parametrize("qtype, n_blocks", [(T.Q6_K, 64), (T.Q8_0, 37)], ids=["Q6_K-16-programs", "Q8_0-partial-last"])
def test_many_programs_and_a_partial_last_one(monkeypatch, qtype, n_blocks):
    monkeypatch.setattr(td, "INTERPRETER_VALUES_PER_PROGRAM", 512)  # Q8_0: 1184 values, the third program masked
    blocks = random_blocks(qtype, n_blocks, seed=3).to(DEVICE)
    shape = (n_blocks * GGML_QUANT_SIZES[qtype][0],)
    ours = td.triton_dequantize(blocks, qtype, shape, torch.bfloat16)
    assert torch.equal(ours, dequantize(blocks, qtype, shape, torch.bfloat16))


@needs_triton
def test_bf16_rounds_ties_to_even():
    # d = 1 + 3 * 2^-8 lies halfway between bf16 1 + 2^-7 (odd) and 1 + 2^-6 (even): nearest-even gives 1.015625,
    # truncation (the interpreter's plain cast) would give 1.0078125.
    block = torch.zeros(34, dtype=torch.uint8)
    block[:2] = torch.tensor([1.01171875], dtype=torch.float16).view(torch.uint8)
    block[2:] = torch.tensor([1, -1] * 16, dtype=torch.int8).view(torch.uint8)
    ours = td.triton_dequantize(block.to(DEVICE), T.Q8_0, (32,), torch.bfloat16).cpu()
    assert ours[:2].tolist() == [1.015625, -1.015625]
    assert torch.equal(ours, dequantize(block, T.Q8_0, (32,), torch.bfloat16))


@needs_triton
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on inf * 0 and fp16 overflow
@pytest.mark.parametrize("scale", [1e-7, 60000.0], ids=["subnormal-fp16-scales", "fp16-overflow"])
@pytest.mark.parametrize("qtype", list(HALF_FIELDS), ids=lambda t: t.name)
def test_extreme_scales_match(qtype, scale):
    blocks = random_blocks(qtype, 16, seed=5, scale=scale).to(DEVICE)
    shape = shape_of(qtype, 16)
    for dtype in (torch.float16, torch.bfloat16):
        ours = td.triton_dequantize(blocks, qtype, shape, dtype)
        expected = dequantize(blocks, qtype, shape, dtype)
        torch.testing.assert_close(ours, expected, rtol=0, atol=0, equal_nan=True)
    if scale > 1:
        assert torch.isinf(dequantize(blocks, qtype, shape, torch.float16)).any()  # the overflow case is exercised


@needs_triton
def test_row_bytes_odd_offset_and_3d_shape():
    blocks = random_blocks(T.Q4_K, 12, seed=6)
    buffer = torch.cat([torch.zeros(1, dtype=torch.uint8), blocks.reshape(-1)]).to(DEVICE)
    ours = td.triton_dequantize(buffer[1:].reshape(6, -1), T.Q4_K, (2, 3, 512), torch.bfloat16)
    assert ours.shape == (2, 3, 512)
    assert torch.equal(ours, dequantize(blocks.to(DEVICE), T.Q4_K, (2, 3, 512), torch.bfloat16))


@needs_triton
def test_errors_name_the_problem_and_fix():
    data = torch.zeros(210, dtype=torch.uint8, device=DEVICE)
    with pytest.raises(UnsupportedQuantizationError, match=r"Q4_0 is not supported for Triton dequantization"):
        td.triton_dequantize(torch.zeros(18, dtype=torch.uint8), T.Q4_0, (32,))
    with pytest.raises(ValueError, match=r"not torch.float64; use wan_accel_kernels.gguf.dequantize"):
        td.triton_dequantize(data, T.Q6_K, (256,), torch.float64)
    with pytest.raises(ValueError, match=r"needs 420 bytes, got 210"):
        td.triton_dequantize(data, T.Q6_K, (2, 256))
    with pytest.raises(ValueError, match="raw uint8 bytes"):
        td.triton_dequantize(data.view(torch.int8), T.Q6_K, (256,))


def test_auto_on_cpu_uses_torch_and_counts():
    blocks = random_blocks(T.Q6_K, 4, seed=8)
    backend.dequantize_on_device(blocks, T.Q6_K, (4, 256), torch.bfloat16)  # outside a recording: not counted
    with recording(DequantRecord()) as record:
        out = backend.dequantize_on_device(blocks, T.Q6_K, (4, 256), torch.bfloat16, layer="Linear")
    assert torch.equal(out, dequantize(blocks, T.Q6_K, (4, 256), torch.bfloat16))
    assert backend.choose_path(blocks, T.Q6_K, torch.bfloat16)[0] == backend.TORCH
    assert record.path_counts() == {("torch", "Q6_K"): 1}
    assert record.summary() == "GGUF dequant: torch Q6_K x1"
    assert record.describe() == "torch per layer → bfloat16 on cpu (data on cpu; the Triton kernels run on CUDA)"
    assert active_record() is None


def test_env_override_torch_and_invalid(monkeypatch):
    cuda = types.SimpleNamespace(device=torch.device("cuda", 0))  # choose_path only looks at the device
    monkeypatch.setenv(backend.ENV_VAR, "torch")
    assert backend.choose_path(cuda, T.Q6_K, torch.bfloat16) == ("torch", "WAN_ACCEL_GGUF_DEQUANT=torch")
    monkeypatch.setenv(backend.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"WAN_ACCEL_GGUF_DEQUANT='fast' is not one of auto, torch, triton"):
        backend.choose_path(cuda, T.Q6_K, torch.bfloat16)


def test_missing_triton_falls_back_on_cuda_and_forced_triton_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(backend, "_triton_kernels", lambda: "triton does not import (ModuleNotFoundError: triton)")
    cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    path, reason = backend.choose_path(cuda, T.Q6_K, torch.bfloat16)
    assert path == "torch" and reason.endswith("install triton for faster GGUF dequantisation")
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match=r"triton does not import .*pip install triton"):
        backend.choose_path(cuda, T.Q6_K, torch.bfloat16)


def compiled_kernels(**changes) -> types.SimpleNamespace:
    """A stand-in for the Triton module as imported without TRITON_INTERPRET (compiled kernels)."""
    fields = dict(interpreting=lambda: False, TRITON_DEQUANTIZE_TYPES=tuple(HALF_FIELDS),
                  TRITON_OUTPUT_DTYPES=tuple(DTYPES))
    return types.SimpleNamespace(**{**fields, **changes})


def test_auto_on_cuda_covers_the_four_types_and_three_dtypes(monkeypatch):
    monkeypatch.setattr(backend, "_triton_kernels", compiled_kernels)
    cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    for qtype in HALF_FIELDS:
        for dtype in DTYPES:
            assert backend.choose_path(cuda, qtype, dtype)[0] == "triton"
    assert backend.choose_path(cuda, T.Q4_0, torch.bfloat16) == ("torch", "no Triton kernel for Q4_0")
    assert backend.choose_path(cuda, T.Q6_K, torch.float64) == ("torch", "no Triton kernel writes torch.float64")


@needs_triton
def test_forced_triton_runs_the_kernels_and_logs_once(monkeypatch, caplog):
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    blocks = random_blocks(T.Q5_K, 8, seed=9).to(DEVICE)
    with caplog.at_level(logging.INFO, logger="wan_accel"), recording(DequantRecord()) as record:
        for _ in range(2):
            out = backend.dequantize_on_device(blocks, T.Q5_K, (8, 256), torch.float16)
    assert torch.equal(out, dequantize(blocks, T.Q5_K, (8, 256), torch.float16))
    assert record.path_counts() == {("triton", "Q5_K"): 2}
    messages = [r.getMessage() for r in caplog.records if r.name == "wan_accel"]
    assert len(messages) == 1 and "GGUF Q5_K dequantisation uses triton: Triton kernels" in messages[0]
    assert backend.choose_path(blocks, T.Q4_0, torch.float16) == ("torch", "no Triton kernel for Q4_0")


def _broken_triton(monkeypatch) -> list:
    """Makes every Triton launch raise as a driver without sm_120 support would; returns the list of launches."""
    launches = []

    def broken_launch(*args, **kwargs):
        launches.append(args)
        raise RuntimeError("PTX .version 9.9 does not support .target sm_120")

    kernels = compiled_kernels(launch=broken_launch)
    monkeypatch.setattr(backend, "_triton_kernels", lambda: kernels)
    monkeypatch.setattr(custom_op, "triton_kernels", lambda: kernels)
    monkeypatch.setattr(backend, "choose_path_on", lambda device, qtype, dtype, failures=None: (
        ("torch", failures.reason(device, qtype, dtype)) if failures and failures.reason(device, qtype, dtype)
        else ("triton", "Triton kernels on cuda:0")))
    return launches


def test_a_failing_kernel_falls_back_to_torch_with_one_warning(monkeypatch, caplog):
    _broken_triton(monkeypatch)
    blocks = random_blocks(T.Q6_K, 2, seed=10)
    with caplog.at_level(logging.INFO, logger="wan_accel"), recording(DequantRecord()) as record:
        out = backend.dequantize_on_device(blocks, T.Q6_K, (2, 256), torch.bfloat16, layer="Linear")
    assert torch.equal(out, dequantize(blocks, T.Q6_K, (2, 256), torch.bfloat16))
    assert record.path_counts() == {("torch", "Q6_K"): 1}
    assert record.fallbacks == {("Linear", "Q6_K"): record.reasons["torch"]}
    assert record.reasons["torch"].startswith("the Triton kernel failed (RuntimeError: PTX .version 9.9")
    assert backend.triton_problem().startswith("the Triton kernel failed (RuntimeError: PTX .version 9.9")
    assert [r.getMessage() for r in caplog.records] == [f"wan-accel: GGUF Q6_K dequantisation uses torch: "
                                                        f"{backend.triton_problem()}"]
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match="PTX .version 9.9"):  # forced: the error is not hidden
        backend.dequantize_on_device(blocks, T.Q6_K, (2, 256), torch.bfloat16)


def test_a_failure_is_remembered_per_owner_not_for_the_process(monkeypatch):
    launches = _broken_triton(monkeypatch)
    blocks = random_blocks(T.Q6_K, 2, seed=11)
    first_model, second_model = backend.TritonFailures(), backend.TritonFailures()
    for _ in range(3):
        backend.dequantize_on_device(blocks, T.Q6_K, (2, 256), torch.bfloat16, failures=first_model)
    assert len(launches) == 1  # the first model tried Triton once, then stayed on torch
    assert first_model.describe().startswith("the Triton kernel failed (RuntimeError: PTX")
    out = backend.dequantize_on_device(blocks, T.Q6_K, (2, 256), torch.bfloat16, failures=second_model)
    assert len(launches) == 2 and second_model.reason(blocks.device, T.Q6_K, torch.bfloat16) is not None
    assert torch.equal(out, dequantize(blocks, T.Q6_K, (2, 256), torch.bfloat16))
    assert backend.UNOWNED.describe() is None and backend.triton_problem(backend.TritonFailures()) is None
    assert first_model.reason(blocks.device, T.Q6_K, torch.float16) is None  # another dtype: not a known failure


def test_choose_path_consults_only_the_callers_failures(monkeypatch):
    monkeypatch.setattr(backend, "_triton_kernels", compiled_kernels)
    cuda = torch.device("cuda", 0)
    failed = backend.TritonFailures()
    failed.record(cuda, T.Q6_K, torch.bfloat16, "the Triton kernel failed (RuntimeError: no sm_120)")
    assert backend.choose_path_on(cuda, T.Q6_K, torch.bfloat16, failed) == (
        "torch", "the Triton kernel failed (RuntimeError: no sm_120)")
    assert backend.choose_path_on(cuda, T.Q6_K, torch.bfloat16, backend.TritonFailures())[0] == "triton"
    assert backend.choose_path_on(cuda, T.Q6_K, torch.bfloat16)[0] == "triton"  # UNOWNED knows nothing of it
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match=r"=triton but the Triton kernel failed .*unset WAN_ACCEL_GGUF_DEQUANT"):
        backend.choose_path_on(cuda, T.Q6_K, torch.bfloat16, failed)


def test_auto_never_sends_cuda_tensors_to_the_interpreter(monkeypatch):
    monkeypatch.setattr(backend, "_triton_kernels", lambda: compiled_kernels(interpreting=lambda: True))
    cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    path, reason = backend.choose_path(cuda, T.Q6_K, torch.bfloat16)
    assert path == "torch" and reason.startswith("TRITON_INTERPRET=1 is set: Triton's CPU interpreter")
    cpu = types.SimpleNamespace(device=torch.device("cpu"))
    assert backend.choose_path(cpu, T.Q6_K, torch.bfloat16)[0] == "torch"  # auto on CPU: torch, as before
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    assert backend.choose_path(cpu, T.Q6_K, torch.bfloat16) == ("triton", "Triton kernels (interpreter)")
    with pytest.raises(RuntimeError, match=r"CUDA data under TRITON_INTERPRET=1.*unset TRITON_INTERPRET"):
        backend.choose_path(cuda, T.Q6_K, torch.bfloat16)


def test_forced_triton_on_cpu_without_interpreter_is_an_error(monkeypatch):
    interpreted_off = types.SimpleNamespace(interpreting=lambda: False, TRITON_DEQUANTIZE_TYPES=(T.Q6_K,),
                                            TRITON_OUTPUT_DTYPES=(torch.bfloat16,))
    monkeypatch.setattr(backend, "_triton_kernels", lambda: interpreted_off)
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match=r"TRITON_INTERPRET=1; move the data to CUDA or unset"):
        backend.choose_path(torch.zeros(210, dtype=torch.uint8), T.Q6_K, torch.bfloat16)


AOT_SCRIPT = """
import json, re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from wan_accel_kernels.gguf import triton_dequantize as td
found = {}
for qtype, kernel in td.KERNELS.items():
    source = ASTSource(kernel, {"src": "*u8", "out": "*bf16", "n_values": "i32", "BLOCK": "constexpr"},
                       constexprs={"BLOCK": td.VALUES_PER_PROGRAM})
    compiled = triton.compile(source, target=GPUTarget("cuda", 89, 32), options=dict(td.COMPILE_OPTIONS, num_warps=4))
    found[qtype.name] = [len(compiled.asm["cubin"]), sorted(set(re.findall(r"\\bfma\\.[\\w.]+", compiled.asm["ptx"])))]
print(json.dumps(found))
"""


@needs_triton
def test_kernels_compile_for_the_rtx_4090_without_fma():
    # Ahead-of-time compilation to sm_89 cubin needs no GPU: it checks the GPU build the interpreter cannot, and that
    # no multiply-add was contracted into an FMA (Q4_K/Q5_K compute a * b - c; with fusion on, PTX has fma.rn.f32).
    found = run_aot_script(AOT_SCRIPT)
    assert sorted(found) == ["Q4_K", "Q5_K", "Q6_K", "Q8_0"]
    for kernel, (cubin_bytes, fma) in found.items():
        assert cubin_bytes > 1000 and fma == [], (kernel, cubin_bytes, fma)
