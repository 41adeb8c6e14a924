"""Patch Attention in the real host: the override gets the host's own calls, matches its attention, is counted per
run, survives the host's torch.compile wrapper, and a patched graph gives the unpatched graph's latent.

On this CPU machine the patch's route is the host's own attention (no CUDA, so no sage): the override hands every
call to the ``original`` function the host gives it, so patched and unpatched agree bit for bit.
"""
from __future__ import annotations

import os
import re

import pytest
import torch

from wan_accel_kernels.attention import probe_sage
from tests.support import graphs
from tests.support.comfy_server import read_latent
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_models import tiny_wan_i2v_state_dict

PATCH_NODE = "20"
COMPILE_NODE = "21"
ATTENTION_CALLS_PER_FORWARD = 2 * 3  # tiny DiT: 2 blocks x (self, text cross, image cross)
RUN_LINE = re.compile(r"Patch Attention \((?P<backend>[\w]+)\) run: (?P<calls>\d+) attention calls \((?P<routes>.*?)\)")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def host():
    import_host()
    import comfy.ldm.modules.attention
    import comfy.ldm.wan.model
    import comfy.sample
    import comfy.sd
    return comfy


@pytest.fixture(scope="module")
def node(host):
    return import_pack_module("nodes.attention_patch")


@pytest.fixture(scope="module")
def tiny_model(host):
    return host.sd.load_diffusion_model_state_dict(tiny_wan_i2v_state_dict(), model_options={"dtype": torch.float32})


def _qkv(seed: int, heads: int = 4, head_dim: int = 32, kv_tokens: int = 24):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, heads * head_dim, generator=generator) for n in (24, kv_tokens, kv_tokens)]


def test_override_hands_the_hosts_calls_to_the_hosts_own_attention(host, node, tiny_model):
    attention = host.ldm.modules.attention
    override = node.PatchAttention.execute(tiny_model, "auto", True).result[0] \
        .model_options["transformer_options"][node.OVERRIDE_KEY]
    options = {node.OVERRIDE_KEY: override}
    q, k, v = _qkv(0, kv_tokens=17)
    q4, k4, v4 = (t.view(2, -1, 4, 32).transpose(1, 2) for t in (q, k, v))
    mask = torch.rand(24, 17, generator=torch.Generator().manual_seed(1)) > 0.2
    mask[:, 0] = True
    cases = [((q, k, v), {}), ((q4, k4, v4), {"skip_reshape": True}),
             ((q4, k4, v4), {"skip_reshape": True, "skip_output_reshape": True}), ((q, k, v), {"mask": mask})]
    for tensors, kwargs in cases:
        ours = attention.attention_pytorch(*tensors, 4, transformer_options=options, **kwargs)
        assert torch.equal(ours, attention.attention_pytorch(*tensors, 4, **kwargs)), kwargs
    default = attention.optimized_attention(q, k, v, 4)
    patched = attention.optimized_attention(q, k, v, 4, transformer_options=options)
    print(f"\nhost default attention here: {attention.optimized_attention.__name__}; patched vs it: "
          f"relative error {_relative(patched, default):.2e}")
    assert torch.equal(patched, default)  # the host's own choice ran, not a copy of SDPA
    assert override.stats.routes == {"sdpa": len(cases) + 1}


def test_full_precision_hint_and_tensor_containers_of_the_newer_host(host, node, tiny_model):
    """ComfyUI 0.33 passes ``low_precision_attention=False`` (Wan's image cross-attention) and may pass q/k/v in
    single-owner tensor containers; both reach the override and the host's attention intact."""
    attention = host.ldm.modules.attention
    override = node.PatchAttention.execute(tiny_model, "auto", True).result[0] \
        .model_options["transformer_options"][node.OVERRIDE_KEY]
    options = {node.OVERRIDE_KEY: override}
    q, k, v = _qkv(2)
    hinted = attention.attention_pytorch(q, k, v, 4, transformer_options=options, low_precision_attention=False)
    assert torch.equal(hinted, attention.attention_pytorch(q, k, v, 4))
    assert any(key[-1] and "low_precision_attention=False" in key[-1] for key in override._decisions)
    container = getattr(attention, "AttentionTensorContainer", None)
    if container is None:
        pytest.skip("this host has no attention tensor containers (ComfyUI < 0.33)")
    boxed = [container(t.clone()) for t in (q, k, v)]
    assert torch.equal(attention.attention_pytorch(*boxed, 4, transformer_options=options),
                       attention.attention_pytorch(q, k, v, 4))
    assert all(box.tensor is None for box in boxed)  # consumed once, as the host's contract says


def test_node_patches_a_clone_only(node, tiny_model):
    output = node.PatchAttention.execute(tiny_model, "sageattn_qk_int8_pv_fp16_cuda", False)
    patched = output.result[0]
    assert node.OVERRIDE_KEY not in tiny_model.model_options.get("transformer_options", {})
    assert not tiny_model.wrappers and patched.is_clone(tiny_model)
    override = patched.model_options["transformer_options"][node.OVERRIDE_KEY]
    assert (override.backend, override.nan_guard) == ("sageattn_qk_int8_pv_fp16_cuda", False)
    text = output.ui.as_dict()["text"][0]
    installed = override.sage.describe()
    print(f"\n{text}")
    assert text.startswith("Patch Attention: sageattn_qk_int8_pv_fp16_cuda -> sdpa (")  # float32: sdpa anywhere
    assert text.endswith(f" for {patched.load_device.type} float32 head_dim 128; {installed}; NaN guard off")
    twice = node.PatchAttention.execute(patched, "auto", True).result[0]
    assert len(twice.wrappers["outer_sample"][node.WRAPPER_KEY]) == 1


def _sample(host, model, seed: int = 0) -> torch.Tensor:
    """4 uni_pc steps of the tiny DiT on a 5-frame 64x64 Wan latent, cfg 1 (one model call per step)."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.zeros(1, 16, 2, 8, 8)
    noise = torch.randn(latent.shape, generator=generator)
    positive = [[torch.randn(1, 12, 4096, generator=generator), {}]]
    negative = [[torch.zeros(1, 12, 4096), {}]]
    with torch.inference_mode():  # as the host's executor runs nodes
        return host.sample.sample(model, noise, 4, 1.0, "uni_pc", "simple", positive, negative, latent, seed=seed,
                                  disable_pbar=True)


def _count_forwards(host, model) -> list:
    """Adds a DIFFUSION_MODEL wrapper to ``model`` that counts forwards into the returned list."""
    forwards = []

    def counting(executor, *args, **kwargs):
        forwards.append(1)
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(host.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test.count", counting)
    return forwards


def test_sampling_counts_every_call_per_run_and_matches_unpatched(host, node, tiny_model, caplog):
    reference = _sample(host, tiny_model)
    patched = node.PatchAttention.execute(tiny_model, "auto", True).result[0]
    forwards = _count_forwards(host, patched)
    with caplog.at_level("INFO", logger="wan_accel"):
        first = _sample(host, patched)
        second = _sample(host, patched)
    runs = [m for m in map(RUN_LINE.search, caplog.messages) if m]
    calls = [int(m["calls"]) for m in runs]
    print(f"\n{len(forwards)} forwards in 2 runs; attention calls per run {calls}; patched vs unpatched: "
          f"relative error {_relative(first, reference):.2e}")
    assert calls == [len(forwards) // 2 * ATTENTION_CALLS_PER_FORWARD] * 2 and calls[0] > 0
    assert runs[0]["routes"] == f"{calls[0]} sdpa"
    assert torch.equal(first, second) and _relative(first, reference) < 1e-5


def test_patched_model_compiles_whole_under_the_hosts_torch_compile_wrapper(host, node, tiny_model, monkeypatch):
    """``TorchCompileModel`` is ``set_torch_compile_wrapper(model.clone(), backend)``; "aot_eager" traces the same
    graph (dynamo + AOT autograd) without inductor's C++ build (about 2 minutes for this model on 2 cores).

    The host's attention is its SDPA function, as on CUDA (``--use-pytorch-cross-attention``): its CPU default,
    sub-quadratic attention, asks psutil for free memory and breaks graphs whether or not the model is patched."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.utils import counters

    monkeypatch.setattr(host.ldm.wan.model, "optimized_attention", host.ldm.modules.attention.attention_pytorch)
    torch._dynamo.reset()
    counters.clear()
    patched = node.PatchAttention.execute(tiny_model, "auto", True).result[0]
    eager = _sample(host, patched)
    compiled = patched.clone()
    set_torch_compile_wrapper(compiled, backend="aot_eager")
    override = compiled.model_options["transformer_options"][node.OVERRIDE_KEY]
    out = _sample(host, compiled)
    print(f"\naot_eager-compiled vs eager patched model: relative error {_relative(out, eager):.2e}; "
          f"frames compiled {dict(counters['frames'])}, graph breaks {sum(counters['graph_break'].values())}; "
          f"counts under compile: {override.stats.describe()}")
    assert _relative(out, eager) < 1e-5
    assert counters["frames"]["total"] == counters["frames"]["ok"] == 1 and not counters["graph_break"]
    assert override.stats.calls == 0  # the host's route was traced into the graph, not run as Python


def _patched_graph(backend: str, prefix: str, compile_backend: str = "") -> dict:
    graph = graphs.tiny_i2v_graph(filename_prefix=f"latents/{prefix}")
    graph[PATCH_NODE] = {"class_type": "WanAccelPatchAttention",
                         "inputs": {"model": [graphs.NODE["model"], 0], "backend": backend, "nan_guard": True}}
    model_ref = [PATCH_NODE, 0]
    if compile_backend:
        graph[COMPILE_NODE] = {"class_type": "TorchCompileModel",
                               "inputs": {"model": model_ref, "backend": compile_backend}}
        model_ref = [COMPILE_NODE, 0]
    graph[graphs.NODE["sampler"]]["inputs"]["model"] = model_ref
    return graph


def _latent(server, history) -> torch.Tensor:
    return read_latent(server.output_files(history, "latents")[0])


def test_patched_graph_gives_the_unpatched_latent_and_counts_calls(wan_pack):
    reference = _latent(wan_pack, wan_pack.run(graphs.tiny_i2v_graph(filename_prefix="latents/attn_ref")))
    results = {}
    for backend in ("auto", "sageattn_qk_int8_pv_fp8_cuda_sm90", "sdpa"):
        history = wan_pack.run(_patched_graph(backend, f"attn_{backend}"))
        panel = wan_pack.get_json("/wan_accel/stats")["nodes"][PATCH_NODE]
        results[backend] = (_latent(wan_pack, history), history["outputs"][PATCH_NODE]["text"][0], panel)
    runs = {m["backend"]: m for m in map(RUN_LINE.search, wan_pack.log_text().splitlines()) if m}
    for backend, (latent, text, panel) in results.items():
        print(f"\n{backend}: relative error vs unpatched {_relative(latent, reference):.2e}; {text}; "
              f"log: {runs[backend].group(0)}; stats panel: {panel['lines']} {panel['warnings']}")
        assert latent.shape == reference.shape and _relative(latent, reference) < 1e-5
        calls = int(runs[backend]["calls"])
        assert calls > 0 and calls % ATTENTION_CALLS_PER_FORWARD == 0 and runs[backend]["routes"] == f"{calls} sdpa"
        fallbacks = 0 if backend == "sdpa" else calls
        assert panel["stats"] == {"attention_backend": backend, "attention_fallbacks": fallbacks}
        assert panel["lines"][1] == f"{calls} attention calls ({calls} sdpa)"
    calls = int(runs["auto"]["calls"])
    assert results["auto"][2]["warnings"] == ["no CUDA: tensors on cpu",
                                              f"{calls} attention calls fell back from auto"]
    assert results["sdpa"][2]["warnings"] == []
    assert "auto -> sdpa (no CUDA: tensors on cpu) for cpu float32 head_dim 128" in results["auto"][1]
    assert probe_sage().describe() in results["auto"][1]
    assert results["sdpa"][1].startswith("Patch Attention: sdpa -> sdpa (sdpa requested)")
    assert "Patch Attention (auto): sdpa (no CUDA: tensors on cpu)" in wan_pack.log_text()


@pytest.mark.skipif(not os.environ.get("WAN_ACCEL_INDUCTOR"),
                    reason="set WAN_ACCEL_INDUCTOR=1: inductor compiles the tiny DiT for about 2 min on 2 CPU cores")
def test_patched_graph_under_torch_compile_model_inductor(wan_pack):
    reference = _latent(wan_pack, wan_pack.run(graphs.tiny_i2v_graph(filename_prefix="latents/attn_ref_ind")))
    history = wan_pack.run(_patched_graph("auto", "attn_inductor", compile_backend="inductor"), timeout=1200)
    error = _relative(_latent(wan_pack, history), reference)
    print(f"\nPatch Attention -> TorchCompileModel(inductor): relative error vs unpatched eager {error:.2e}")
    assert error < 1e-5
