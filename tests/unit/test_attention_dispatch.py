"""wan_accel_kernels.attention.dispatch: the backend decision for each GPU arch, sageattention version and fallback reason."""
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from wan_accel_kernels.attention import sage as sage_module
from wan_accel_kernels.attention.dispatch import (
    BACKENDS,
    FP8_CUDA,
    FP8_CUDA_SM90,
    FP16_CUDA,
    FP16_TRITON,
    SAGE,
    SAGE_KERNELS,
    SDPA,
    AttentionCall,
    SageInstall,
    build_cuda,
    dispatch,
    layout_of,
    version_tuple,
)
from wan_accel_kernels.attention.sage import offered_kernels, probe_sage, sage_attention
from tests.support.fake_sage import install_fake_sage

SAGE_22 = SageInstall("2.2.0", frozenset(SAGE_KERNELS))
SAGE_211 = SageInstall("2.1.1", frozenset(SAGE_KERNELS))
SAGE_106 = SageInstall("1.0.6", frozenset({FP16_TRITON}))
WAN_CALL = AttentionCall("cuda", (8, 9), torch.bfloat16, 128, False, "NHD")


def test_backend_names_are_auto_one_per_sage_kernel_and_sdpa():
    assert BACKENDS == ("auto", "sageattn_qk_int8_pv_fp16_triton", "sageattn_qk_int8_pv_fp16_cuda",
                        "sageattn_qk_int8_pv_fp8_cuda", "sageattn_qk_int8_pv_fp8_cuda_sm90", "sdpa")
    with pytest.raises(ValueError, match="unknown attention backend 'sageattn'"):
        dispatch("sageattn", WAN_CALL, SAGE_22)


@pytest.mark.parametrize("capability, kernel, options", [
    ((8, 0), FP16_CUDA, (("pv_accum_dtype", "fp32"),)),
    ((8, 6), FP16_TRITON, ()),
    ((8, 9), FP8_CUDA, (("pv_accum_dtype", "fp32+fp32"), ("qk_quant_gran", "per_thread"))),
    ((9, 0), FP8_CUDA_SM90, (("pv_accum_dtype", "fp32+fp32"),)),
    ((12, 0), FP8_CUDA, (("pv_accum_dtype", "fp32+fp16"), ("qk_quant_gran", "per_warp"))),
    ((8, 7), FP16_CUDA, (("pv_accum_dtype", "fp32"),)),
])
def test_auto_picks_sageattentions_own_kernel_per_arch(capability, kernel, options):
    decision = dispatch("auto", replace(WAN_CALL, capability=capability), SAGE_22)
    assert (decision.backend, decision.kernel, decision.options) == (SAGE, kernel, options)
    assert decision.reason.startswith(f"auto on sm{capability[0]}{capability[1]}, sageattention 2.2.0")


def test_fp8_pv_accumulates_in_fp32_before_sageattention_2_2():
    decision = dispatch("auto", WAN_CALL, SAGE_211)
    assert decision.kernel == FP8_CUDA and dict(decision.options)["pv_accum_dtype"] == "fp32+fp32"


def test_auto_skips_kernels_the_wheel_did_not_compile():
    without_fp8 = SageInstall("2.2.0", frozenset({FP16_TRITON, FP16_CUDA}))
    assert dispatch("auto", WAN_CALL, without_fp8).kernel == FP16_CUDA
    assert dispatch("auto", replace(WAN_CALL, capability=(9, 0)), without_fp8).kernel == FP16_CUDA
    triton_only = SageInstall("2.2.0", frozenset({FP16_TRITON}))
    decision = dispatch("auto", replace(WAN_CALL, capability=(12, 0)), triton_only)
    assert decision.backend == SDPA and decision.reason == "no sage kernel for sm120 in sageattention 2.2.0"


def test_sageattention_1_offers_its_triton_kernel_only():
    assert dispatch("auto", WAN_CALL, SAGE_106).kernel == FP16_TRITON
    decision = dispatch("auto", replace(WAN_CALL, head_dim=80), SAGE_106)
    assert decision.backend == SDPA and decision.reason == "head_dim 80: sageattention 1.x takes 64/96/128"
    assert dispatch("auto", replace(WAN_CALL, head_dim=80), SAGE_22).kernel == FP8_CUDA  # 2.x pads to 128


@pytest.mark.parametrize("change, sage, reason", [
    (dict(device_type="cpu", capability=None), SAGE_22, "no CUDA: tensors on cpu"),
    ({}, SageInstall(None), "sageattention not installed (pip install sageattention)"),
    ({}, SageInstall("2.2.0", problem="ImportError: libcuda.so.1"),
     "sageattention 2.2.0 does not import: ImportError: libcuda.so.1"),
    (dict(head_dim=256), SAGE_22, "head_dim 256 > 128"),
    (dict(dtype=torch.float32), SAGE_22, "float32 inputs: sage takes float16/bfloat16 only"),
    (dict(has_mask=True), SAGE_22, "attention mask present: sage kernels do not apply masks"),
    (dict(layout="last dim not contiguous"), SAGE_22, "layout not taken by sage: last dim not contiguous"),
    (dict(capability=(7, 5)), SAGE_22, "no sage kernel for sm75 in sageattention 2.2.0"),
])
def test_each_unsafe_condition_falls_back_to_sdpa_with_its_reason(change, sage, reason):
    for backend in BACKENDS[:-1]:
        decision = dispatch(backend, replace(WAN_CALL, **change), sage)
        assert decision.backend == SDPA and decision.kernel is None, backend
        if backend == "auto" or "sm75" not in reason:
            assert decision.reason == reason, backend


def test_sdpa_requested_is_sdpa_even_where_sage_would_run():
    decision = dispatch("sdpa", WAN_CALL, SAGE_22)
    assert (decision.backend, decision.reason, decision.label) == (SDPA, "sdpa requested", "sdpa")


@pytest.mark.parametrize("kernel, capability, expected", [
    (FP8_CUDA_SM90, (9, 0), FP8_CUDA_SM90),
    (FP8_CUDA_SM90, (8, 9), "qk_int8_pv_fp8_cuda_sm90 does not run on sm89"),
    (FP8_CUDA, (8, 6), "qk_int8_pv_fp8_cuda does not run on sm86"),
    (FP8_CUDA, (9, 0), "qk_int8_pv_fp8_cuda does not run on sm90"),
    (FP16_TRITON, (12, 0), "qk_int8_pv_fp16_triton does not run on sm120"),
    (FP16_CUDA, (8, 6), FP16_CUDA),
    (FP16_TRITON, (8, 9), FP16_TRITON),
])
def test_an_explicit_kernel_runs_only_on_its_arch(kernel, capability, expected):
    decision = dispatch("sageattn_" + kernel, replace(WAN_CALL, capability=capability), SAGE_22)
    if expected in SAGE_KERNELS:
        assert decision.backend == SAGE and decision.kernel == expected
        assert decision.reason.startswith("requested on sm")
    else:
        assert decision.backend == SDPA and decision.reason == expected


def test_an_explicit_kernel_the_install_lacks_falls_back():
    decision = dispatch("sageattn_qk_int8_pv_fp8_cuda", WAN_CALL, SAGE_106)
    assert decision.backend == SDPA and decision.reason == "sageattention 1.0.6 does not offer qk_int8_pv_fp8_cuda"


def test_decision_text_names_route_options_and_reason():
    decision = dispatch("auto", WAN_CALL, SageInstall("2.2.0+cu128torch2.7.1", frozenset(SAGE_KERNELS)))
    assert decision.describe() == ("sage qk_int8_pv_fp8_cuda, pv_accum_dtype=fp32+fp16, qk_quant_gran=per_thread "
                                   "(auto on sm89, sageattention 2.2.0+cu128torch2.7.1)")
    assert dispatch("auto", WAN_CALL, SAGE_22).describe() == (
        "sage qk_int8_pv_fp8_cuda, pv_accum_dtype=fp32+fp32, qk_quant_gran=per_thread (auto on sm89, sageattention "
        "2.2.0; fp32+fp32 PV: build CUDA unknown, fp32+fp16 needs a build with CUDA >= 12.8)")


@pytest.mark.parametrize("version, cuda", [
    ("2.2.0+cu128torch2.7.1", (12, 8)), ("2.2.0.post2+cu130torch2.9.0", (13, 0)), ("2.1.1+cu124torch2.5.1", (12, 4)),
    ("2.2.0+torch2.7.1cu126", (12, 6)), ("2.2.0", None), ("2.2.0+torch2.7.1", None), ("1.0.6", None),
])
def test_build_cuda_is_read_from_the_wheels_version_tag(version, cuda):
    assert build_cuda(version) == cuda


@pytest.mark.parametrize("version, capability, accum", [
    ("2.2.0", (8, 9), "fp32+fp32"),                   # a source build records no CUDA: unknown is too old
    ("2.2.0+cu126torch2.7.1", (8, 9), "fp32+fp32"),   # built before 12.8: the fp16-accumulation path is a trap
    ("2.2.0+cu128torch2.7.1", (8, 9), "fp32+fp16"),
    ("2.2.0+cu130torch2.9.0", (8, 9), "fp32+fp16"),
    ("2.1.1+cu128torch2.7.1", (8, 9), "fp32+fp32"),   # 2.1 has no fp32+fp16 path
    ("2.2.0", (12, 0), "fp32+fp16"),                  # sm120 builds need CUDA >= 12.8 anyway
])
def test_sm89_accumulates_pv_in_fp16_only_for_a_build_known_to_have_cuda_12_8(monkeypatch, version, capability,
                                                                             accum):
    fake = install_fake_sage(monkeypatch, capability=capability, version=version)
    sage = probe_sage()
    decision = dispatch("auto", replace(WAN_CALL, capability=capability), sage)
    assert sage.version == version and decision.kernel == FP8_CUDA
    q, k, v = _qkv((1, 2, 8, 16), dtype=torch.bfloat16)
    sage_attention(decision, sage.version, q, k, v, "HND")
    assert fake.calls[-1][2]["pv_accum_dtype"] == accum
    assert ("fp32+fp16 needs a build with CUDA >= 12.8" in decision.reason) == (accum == "fp32+fp32"
                                                                              and version.startswith("2.2"))


def test_version_parsing_ignores_local_build_tags():
    assert version_tuple("2.1.1+cu128torch2.7.1") == (2, 1, 1)
    assert version_tuple("1.0") == (1, 0, 0)
    assert version_tuple("2.2.0.post3") == (2, 2, 0)


def _qkv(shape, **kw):
    return [torch.randn(shape, **kw) for _ in range(3)]


def test_layout_of_the_hosts_two_conventions():
    q, k, v = _qkv((2, 10, 4 * 16))
    assert layout_of(q, k, v, 4, skip_reshape=False) == ("NHD", 16)
    q, k, v = _qkv((2, 4, 10, 16))
    assert layout_of(q, k, v, 4, skip_reshape=True) == ("HND", 16)
    k_short, v_short = torch.randn(2, 4, 7, 16), torch.randn(2, 4, 7, 16)
    assert layout_of(q, k_short, v_short, 4, skip_reshape=True) == ("HND", 16)  # cross-attention: other kv length


def test_layout_of_flags_what_sage_cannot_take():
    q, k, v = _qkv((2, 4, 10, 16))
    column_major = v.transpose(2, 3).contiguous().transpose(2, 3)  # same shape and values, last dim strided
    assert torch.equal(column_major, v) and layout_of(q, k, column_major, 4, True)[0] == "last dim not contiguous"
    assert layout_of(q, k.half(), v, 4, True)[0] == "q/k/v dtypes differ"
    assert layout_of(q, k[:, :2], v[:, :2], 4, True)[0] == "q/k/v heads or widths differ"
    q3, k3, v3 = _qkv((2, 10, 64))
    assert layout_of(q3, k3[..., :32], v3[..., :32], 4, False)[0] == "q/k/v heads or widths differ"


def test_offered_kernels_reads_exports_and_compiled_flags():
    functions = {"sageattn_" + kernel: object() for kernel in SAGE_KERNELS}
    core = SimpleNamespace(SM80_ENABLED=True, SM89_ENABLED=False, SM90_ENABLED=True)
    module = SimpleNamespace(sageattn=object(), core=core, **functions)
    assert offered_kernels(module, "2.2.0") == {FP16_TRITON, FP16_CUDA, FP8_CUDA_SM90}
    assert offered_kernels(SimpleNamespace(sageattn=object()), "1.0.6") == {FP16_TRITON}
    assert offered_kernels(SimpleNamespace(sageattn=object()), "2.0.1") == frozenset()


def test_probe_reports_missing_and_broken_installs(monkeypatch):
    monkeypatch.setattr(sage_module, "installed_version", lambda: None)
    assert probe_sage() == SageInstall(None)
    monkeypatch.setattr(sage_module, "installed_version", lambda: "2.2.0")
    monkeypatch.setitem(sys.modules, "sageattention", None)  # the import raises ModuleNotFoundError
    probed = probe_sage()
    assert probed.version == "2.2.0" and probed.kernels == frozenset()
    assert probed.problem.startswith("ModuleNotFoundError")
    assert dispatch("auto", WAN_CALL, probed).reason.startswith("sageattention 2.2.0 does not import: ModuleNotFound")
