"""wan_accel_kernels.attention.override: the host-facing callable, on CPU (SDPA fallback) and with a fake sageattention."""
import copy
import logging

import pytest
import torch
import torch._dynamo

from wan_accel_kernels.attention import AttentionOverride, SageInstall, probe_sage
from tests.support.fake_sage import install_fake_sage
from tests.support.reference_attention import RecordingAttention, host_attention, reference_attention

HEADS, HEAD_DIM = 4, 32


def _qkv(dtype=torch.float16, seed=0, tokens=24, kv_tokens=24):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, HEADS * HEAD_DIM, generator=generator).to(dtype) for n in (tokens, kv_tokens, kv_tokens)]


def _host_call(override, q, k, v, original=None, **kwargs):
    """How the host's ``wrap_attn`` calls an override: original function first, then its own arguments."""
    original = original or RecordingAttention()
    return override(original, q, k, v, heads=HEADS, transformer_options={}, _inside_attn_wrapper=True, **kwargs)


def sdpa_attention(q, k, v, heads, mask=None):
    """What the host's own attention returns for these tensors."""
    return reference_attention(q, k, v, heads, mask)


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture
def fake_sage(monkeypatch):
    return install_fake_sage(monkeypatch, noise=1e-3)


def _sage_override(backend="auto", nan_guard=True):
    return AttentionOverride(backend, probe_sage(), nan_guard, capability_of=lambda device: (8, 9))


def test_on_cpu_auto_is_sdpa_bit_exact_logged_once(caplog):
    override = AttentionOverride("auto", probe_sage())
    q, k, v = _qkv(torch.float32)
    with caplog.at_level(logging.INFO, logger="wan_accel"):
        outs = [_host_call(override, q, k, v) for _ in range(3)]
    assert all(torch.equal(out, sdpa_attention(q, k, v, HEADS)) for out in outs)
    assert [r.getMessage() for r in caplog.records if r.name == "wan_accel"] == [
        "Patch Attention (auto): sdpa (no CUDA: tensors on cpu)"]
    assert caplog.records[0].levelno == logging.WARNING
    assert override.stats.routes == {"sdpa": 3}


def test_the_host_route_calls_the_hosts_own_attention_with_every_argument():
    """Whatever backend the host was started with stays in force: the override hands the call on as it came."""
    override = AttentionOverride("auto", probe_sage())
    original = RecordingAttention()
    q, k, v = _qkv(torch.float32)
    out = _host_call(override, q, k, v, original=original, scale=0.5, low_precision_attention=True)
    assert torch.equal(out, reference_attention(q, k, v, HEADS, scale=0.5))
    assert len(original.calls) == 1
    assert original.calls[0] == {"mask": None, "attn_precision": None, "skip_reshape": False,
                                 "skip_output_reshape": False, "transformer_options": {},
                                 "_inside_attn_wrapper": True, "scale": 0.5, "low_precision_attention": True}


@pytest.mark.parametrize("hint, reason", [
    ({"low_precision_attention": False}, "the host asked for full precision here (low_precision_attention=False)"),
    ({"enable_gqa": True}, "grouped-query attention (enable_gqa)"),
    ({"scale": 0.5}, "a softmax scale of 0.5 (sage uses 1/sqrt(head_dim))"),
])
def test_the_hosts_hints_keep_a_call_off_sage(fake_sage, caplog, hint, reason):
    override = _sage_override()
    original = RecordingAttention()
    q, k, v = _qkv()
    if hint.get("enable_gqa"):
        k, v = k[..., :HEAD_DIM * 2], v[..., :HEAD_DIM * 2]  # 2 key/value heads for 4 query heads
    with caplog.at_level(logging.INFO, logger="wan_accel"):
        out = _host_call(override, q, k, v, original=original, **hint)
        _host_call(override, *_qkv(), original=original)  # the same signature without the hint still gets sage
    assert torch.equal(out, reference_attention(q, k, v, HEADS, scale=hint.get("scale"),
                                                enable_gqa=hint.get("enable_gqa", False)))
    assert len(original.calls) == 1 and len(fake_sage.calls) == 1
    assert override.stats.routes == {"sdpa": 1, "sage qk_int8_pv_fp8_cuda": 1}
    assert f"Patch Attention (auto): sdpa ({reason})" in [r.getMessage() for r in caplog.records]


def test_the_default_scale_does_not_keep_a_call_off_sage(fake_sage):
    override = _sage_override()
    _host_call(override, *_qkv(), scale=HEAD_DIM ** -0.5)
    assert override.stats.routes == {"sage qk_int8_pv_fp8_cuda": 1}


class _Unviewable(torch.Tensor):
    """A tensor whose 4-d ``view`` fails, as a layout sage's reshape cannot take would."""

    def view(self, *shape):
        if len(shape) == 4:
            raise RuntimeError("view size is not compatible with input tensor's size and stride")
        return super().view(*shape)


def test_an_unviewable_layout_falls_back_instead_of_raising(fake_sage):
    override = _sage_override(nan_guard=False)
    q, k, v = _qkv()
    odd = torch.Tensor._make_subclass(_Unviewable, q)
    out = _host_call(override, odd, k, v)
    assert torch.equal(out.as_subclass(torch.Tensor), sdpa_attention(q, k, v, HEADS))
    assert override.stats.sage_errors == 1 and override.stats.routes == {"sdpa": 1}


def test_sage_route_in_both_host_layouts(fake_sage):
    override = _sage_override()
    q, k, v = _qkv(kv_tokens=9)
    exact = sdpa_attention(q, k, v, HEADS)
    out = _host_call(override, q, k, v)
    assert out.shape == exact.shape and out.dtype == torch.float16
    q4, k4, v4 = (t.view(2, -1, HEADS, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
    out_hnd = _host_call(override, q4, k4, v4, skip_reshape=True, skip_output_reshape=True)
    out_hnd_flat = _host_call(override, q4, k4, v4, skip_reshape=True)
    out_nhd_4d = _host_call(override, q, k, v, skip_output_reshape=True)
    errors = [_relative(out, exact), _relative(out_hnd_flat, exact),
              _relative(out_hnd, exact.view(2, -1, HEADS, HEAD_DIM).transpose(1, 2)),
              _relative(out_nhd_4d, exact.view(2, -1, HEADS, HEAD_DIM).transpose(1, 2))]
    print(f"fake sage (noise 1e-3) vs sdpa, per layout: {errors}")
    assert all(2e-3 < e < 2e-2 for e in errors)  # the fake's noise, not a layout mix-up (that would be ~1.4)
    assert [(c[0], c[1]) for c in fake_sage.calls] == [("qk_int8_pv_fp8_cuda", "NHD"), ("qk_int8_pv_fp8_cuda", "HND"),
                                                       ("qk_int8_pv_fp8_cuda", "HND"), ("qk_int8_pv_fp8_cuda", "NHD")]
    assert fake_sage.calls[0][2] == {"pv_accum_dtype": "fp32+fp32", "qk_quant_gran": "per_thread"}  # untagged 2.2.0
    assert override.stats.routes == {"sage qk_int8_pv_fp8_cuda": 4}
    assert override.stats.guard.checked == 4 and override.stats.guard.recomputed == 0


def test_unsafe_calls_fall_back_per_call(fake_sage):
    override = _sage_override()
    q, k, v = _qkv()
    mask = torch.zeros(24, 24)
    assert torch.equal(_host_call(override, q, k, v, mask=mask), sdpa_attention(q, k, v, HEADS, mask=mask))
    q32, k32, v32 = _qkv(torch.float32)
    assert torch.equal(_host_call(override, q32, k32, v32), sdpa_attention(q32, k32, v32, HEADS))
    _host_call(override, q, k, v)
    assert len(fake_sage.calls) == 1
    assert override.stats.routes == {"sdpa": 2, "sage qk_int8_pv_fp8_cuda": 1}


def test_nan_guard_recomputes_with_sdpa_and_counts(fake_sage):
    fake_sage.mode = "nan"
    override = _sage_override()
    q, k, v = _qkv()
    out = _host_call(override, q, k, v)
    assert torch.isfinite(out).all() and torch.equal(out, sdpa_attention(q, k, v, HEADS))
    assert (override.stats.guard.checked, override.stats.guard.recomputed) == (1, 1)
    assert "NaN guard: 1 of 1 outputs recomputed with sdpa" in override.stats.describe()
    unguarded = _sage_override(nan_guard=False)
    assert torch.isnan(_host_call(unguarded, q, k, v)).any() and unguarded.stats.guard.checked == 0


def test_nan_guard_counts_inputs_that_are_not_finite_on_sdpa_either(fake_sage):
    override = _sage_override()
    q, k, v = _qkv()
    q[0, 0, 0] = float("nan")
    out = _host_call(override, q, k, v)
    assert torch.isnan(out).any()
    assert (override.stats.guard.recomputed, override.stats.guard.still_non_finite) == (1, 1)


def test_a_raising_kernel_falls_back_and_is_not_called_again(fake_sage, caplog):
    fake_sage.mode = "raise"
    override = _sage_override()
    q, k, v = _qkv()
    with caplog.at_level(logging.INFO, logger="wan_accel"):
        outs = [_host_call(override, q, k, v) for _ in range(3)]
    assert all(torch.equal(out, sdpa_attention(q, k, v, HEADS)) for out in outs)
    assert len(fake_sage.calls) == 1 and override.stats.sage_errors == 1
    assert override.stats.routes == {"sdpa": 3}
    ours = [r.getMessage() for r in caplog.records if r.name == "wan_accel"]
    assert ours[-1] == ("Patch Attention (auto): sdpa (sage qk_int8_pv_fp8_cuda raised RuntimeError: "
                        "fake kernel failure)")


def test_out_of_memory_is_not_swallowed(fake_sage, monkeypatch):
    override = _sage_override()

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("fake OOM")

    monkeypatch.setattr(fake_sage, "sageattn_qk_int8_pv_fp8_cuda", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        _host_call(override, *_qkv())


def test_explicit_kernel_and_sdpa_requests(fake_sage):
    q, k, v = _qkv()
    triton = _sage_override("sageattn_qk_int8_pv_fp16_triton")
    _host_call(triton, q, k, v)
    assert fake_sage.calls[-1][0] == "qk_int8_pv_fp16_triton"
    sm90_only = _sage_override("sageattn_qk_int8_pv_fp8_cuda_sm90")
    assert torch.equal(_host_call(sm90_only, q, k, v), sdpa_attention(q, k, v, HEADS))
    sdpa = _sage_override("sdpa")
    _host_call(sdpa, q, k, v)
    assert len(fake_sage.calls) == 1
    assert sm90_only.stats.routes == sdpa.stats.routes == {"sdpa": 1}


def test_counts_reset_per_run_and_clones_start_fresh():
    override = AttentionOverride("sdpa", SageInstall(None), nan_guard=False)
    q, k, v = _qkv(torch.float32)
    _host_call(override, q, k, v)
    _host_call(override, q, k, v)
    assert override.stats.calls == 2 and override.stats.describe() == "2 attention calls (2 sdpa)"
    clone = copy.deepcopy({"transformer_options": {"optimized_attention_override": override}})
    cloned = clone["transformer_options"]["optimized_attention_override"]
    assert cloned is not override and cloned.stats.calls == 0
    assert (cloned.backend, cloned.sage, cloned.nan_guard) == ("sdpa", SageInstall(None), False)
    override.begin_run()
    assert override.stats.calls == 0


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="choose one of auto, sageattn_qk_int8_pv_fp16_triton"):
        AttentionOverride("sage2", SageInstall(None))


def _block(x, transformer_options):
    """A stand-in for a Wan block: two attention calls through the override, as the host makes them."""
    override = transformer_options["optimized_attention_override"]
    q, k, v = x * 2, x + 1, x.sin()
    a = override(host_attention, q, k, v, heads=HEADS, transformer_options=transformer_options,
                 _inside_attn_wrapper=True)
    b = override(host_attention, a, k, v, heads=HEADS, transformer_options=transformer_options,
                 _inside_attn_wrapper=True)
    return a.cos() + b


def test_sdpa_route_traces_into_one_graph_under_torch_compile(caplog):
    torch._dynamo.reset()
    x = torch.randn(2, 16, HEADS * HEAD_DIM)
    eager = _block(x, {"optimized_attention_override": AttentionOverride("auto", probe_sage())})
    cold = {"optimized_attention_override": AttentionOverride("auto", probe_sage())}  # decided while tracing
    explained = torch._dynamo.explain(_block)(x, cold)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wan_accel"):
        compiled = torch.compile(_block, backend="eager", fullgraph=True)
        options = {"optimized_attention_override": AttentionOverride("auto", probe_sage())}
        assert torch.equal(compiled(x, options), eager) and torch.equal(compiled(x, options), eager)
    ours = [r.getMessage() for r in caplog.records if r.name == "wan_accel"]
    assert ours == ["Patch Attention (auto): sdpa (no CUDA: tensors on cpu)"]
    assert options["optimized_attention_override"].stats.calls == 0  # traced into the graph: not counted


def test_sage_route_runs_eagerly_between_compiled_graphs(fake_sage):
    torch._dynamo.reset()
    x = torch.randn(2, 16, HEADS * HEAD_DIM, dtype=torch.float16)
    override = _sage_override()
    options = {"optimized_attention_override": override}
    eager = _block(x, options)
    compiled = torch.compile(_block, backend="eager")
    override.begin_run()
    assert torch.equal(compiled(x, options), eager)
    assert torch.equal(compiled(x, options), eager)
    assert override.stats.routes == {"sage qk_int8_pv_fp8_cuda": 4}  # sage calls are counted under compile too
    explained = torch._dynamo.explain(_block)(x, options)
    assert explained.graph_break_count >= 1  # the sage call is a break: it runs eagerly
