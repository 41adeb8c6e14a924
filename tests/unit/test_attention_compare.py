"""benchmarks/lib/attention_compare: error metrics of a backend against float32 SDPA."""
import pytest
import torch

from benchmarks.lib.attention_compare import compare, error_metrics
from wan_accel_kernels.attention import probe_sage
from tests.support.fake_sage import install_fake_sage


def _qkv(dtype, seed=0, shape=(1, 4, 64, 32)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype) for _ in range(3)]


def test_metrics_of_known_perturbations():
    reference = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    assert error_metrics(reference, reference) == {"cosine": pytest.approx(1.0), "relative_l1": 0.0,
                                                   "relative_rmse": 0.0, "max_abs_error": 0.0, "finite": True}
    scaled = error_metrics(reference * 1.01, reference)
    assert scaled["cosine"] == pytest.approx(1.0) and scaled["relative_l1"] == pytest.approx(0.01, rel=1e-4)
    assert scaled["relative_rmse"] == pytest.approx(0.01, rel=1e-4)
    flipped = error_metrics(-reference, reference)
    assert flipped["cosine"] == pytest.approx(-1.0) and flipped["relative_l1"] == pytest.approx(2.0)
    broken = reference.clone()
    broken[3] = float("nan")
    assert error_metrics(broken, reference)["finite"] is False


def test_sdpa_in_float32_is_the_reference_itself():
    result = compare("sdpa", *_qkv(torch.float32))
    assert result.decision.label == "sdpa" and result.cosine == pytest.approx(1.0, abs=1e-6)
    assert result.relative_l1 == 0.0 and result.max_abs_error == 0.0


@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 8e-3), (torch.float16, 1e-3)])
def test_sdpa_in_half_precision_shows_its_rounding(dtype, bound):
    result = compare("auto", *_qkv(dtype), sage=probe_sage())
    print(f"cpu {dtype}: {result.describe()}")
    assert result.decision.reason == "no CUDA: tensors on cpu"
    assert 0 < result.relative_l1 < bound and result.cosine > 0.9999


def test_compare_runs_the_sage_kernel_dispatch_picks(monkeypatch):
    fake = install_fake_sage(monkeypatch, noise=1e-2, capability=(9, 0))
    q, k, v = _qkv(torch.bfloat16, shape=(1, 4, 64, 128))
    result = compare("auto", q, k, v)
    print(result.describe())
    assert result.decision.kernel == "qk_int8_pv_fp8_cuda_sm90"
    assert fake.calls[0][:2] == ("qk_int8_pv_fp8_cuda_sm90", "HND")
    reference_rms = float(torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float()).pow(2)
                          .mean().sqrt())
    assert result.relative_rmse == pytest.approx(1e-2 / reference_rms, rel=0.1)  # the fake's noise, measured
    assert 0.99 < result.cosine < 1.0
