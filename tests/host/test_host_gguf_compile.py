"""The tiny Wan DiT loaded by our GGUF loader traces under torch.compile as one graph, with no graph break: the
dequantisation is the ``wan_accel::gguf_dequantize`` custom op, decided outside the traced region, and a LoRA's
low-rank side path traces with it.

The host's attention is its SDPA function, as on CUDA: its CPU default (sub-quadratic attention) asks psutil for
free memory and breaks graphs whatever the weights are.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo

from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_gguf_dit import dit_inputs, write_tiny_gguf_dit
from tests.support.tiny_models import tiny_wan_i2v_state_dict, tiny_wan_lora_state_dict

SHAPE = dict(dim=128, layers=2, ffn=256)


@pytest.fixture(scope="module")
def q6k_file(tmp_path_factory):
    return write_tiny_gguf_dit(tmp_path_factory.mktemp("gguf_compile"), **SHAPE)


@pytest.mark.parametrize("with_lora", [False, True], ids=["plain", "lora_side_path"])
def test_the_gguf_dit_compiles_with_no_graph_break(q6k_file, monkeypatch, with_lora):
    import_host()
    import comfy.ldm.modules.attention
    import comfy.ldm.wan.model
    import comfy.sd

    monkeypatch.setattr(comfy.ldm.wan.model, "optimized_attention", comfy.ldm.modules.attention.attention_pytorch)
    patcher = import_pack_module("nodes.gguf_model").load_wan_gguf(q6k_file, "fp32").patcher
    if with_lora:
        lora = tiny_wan_lora_state_dict(tiny_wan_i2v_state_dict(**SHAPE), rank=4)
        patcher, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=0)
    dit = patcher.model.diffusion_model
    inputs = dit_inputs(seed=0, timestep=500.0)
    quantised = sum(1 for m in dit.modules() if getattr(m, "gguf_qtype", None) is not None)
    side_paths = sum(1 for m in dit.modules() if getattr(m, "gguf_patches", None) is not None)
    torch._dynamo.reset()
    with torch.no_grad():
        eager = dit(*inputs)
        explained = torch._dynamo.explain(dit)(*inputs)
        compiled = torch.compile(dit, backend="aot_eager")(*inputs)
    patcher.unpatch_model()
    print(f"\n{quantised} raw-block layers, {side_paths} with a LoRA side path; graphs {explained.graph_count}, "
          f"graph breaks {explained.graph_break_count}; compiled vs eager max |diff| {float((compiled - eager).abs().max()):.2e}")
    assert quantised > 0 and side_paths == (7 * SHAPE["layers"] if with_lora else 0)  # 7 LoRA targets a block
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)
