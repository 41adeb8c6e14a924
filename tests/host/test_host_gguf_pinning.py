"""Our GGUF model against the newer host's weight pinning, its FFN ``linear_input_act`` path and dynamic VRAM.

ComfyUI 0.33 pins the weights a low-VRAM load leaves offloaded (``ModelPatcher.pin_weight_to_device`` ->
``cudaHostRegister``), which fails on the read-only file pages of a memory-mapped GGUF. On this CPU machine the
host never pins (no CUDA), so the host's ``pin_memory`` is replaced by one that records what it was handed and
whether that memory is a mapping of the .gguf file (read from ``/proc/self/maps``), as CUDA would see it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from wan_accel_kernels.gguf.reader import read_gguf
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_gguf_dit import write_tiny_gguf_dit

DIT_SHAPE = dict(dim=256, layers=2, ffn=512)


@pytest.fixture(scope="module")
def q6k_file(tmp_path_factory) -> Path:
    return write_tiny_gguf_dit(tmp_path_factory.mktemp("gguf_pinning"), **DIT_SHAPE)


@pytest.fixture(scope="module")
def model_module():
    import_host()
    return import_pack_module("nodes.gguf_model")


def file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's memory maps of ``path``."""
    target = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and os.path.realpath(fields[5]) == target:
                start, end = (int(part, 16) for part in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def in_mapping(tensor: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    pointer = tensor.data_ptr()
    return any(start <= pointer < end for start, end in ranges)


def test_no_weight_of_the_loaded_model_lies_in_the_files_memory_map(q6k_file, model_module):
    source = read_gguf(q6k_file)  # keeps the reader's own map open, as the loader's file object does
    loaded = model_module.load_wan_gguf(q6k_file)
    ranges = file_mappings(q6k_file)
    assert ranges, "the GGUF reader no longer memory-maps the file; this test has nothing to check"
    assert any(in_mapping(t.data, ranges) for t in source.tensors.values())  # the reader's views do
    mapped = [name for name, p in loaded.patcher.model.named_parameters() if in_mapping(p, ranges)]
    assert mapped == []


def low_vram_round_trip(q6k_file: Path, model_module, monkeypatch) -> tuple:
    """A low-VRAM load and unload of the GGUF model with the host's ``pin_memory`` recording what it was handed
    (refusing, as CUDA does, memory of the file's map): (patcher, parameters before, whether each tensor handed
    over lay in the file's map)."""
    import comfy.model_management

    loaded = model_module.load_wan_gguf(q6k_file)
    patcher = loaded.patcher
    ranges = file_mappings(q6k_file)
    before = {name: p.detach().clone() for name, p in patcher.model.named_parameters()}
    handed, pinned = [], set()

    def pin_memory(tensor: torch.Tensor) -> bool:
        handed.append(in_mapping(tensor, ranges))
        if in_mapping(tensor, ranges):
            raise RuntimeError("cudaHostRegister: read-only file-backed memory (what CUDA answers here)")
        pinned.add(tensor.data_ptr())
        return True

    def unpin_memory(tensor: torch.Tensor) -> bool:
        pinned.discard(tensor.data_ptr())
        return True

    monkeypatch.setattr(comfy.model_management, "pin_memory", pin_memory, raising=False)  # absent before 0.33
    monkeypatch.setattr(comfy.model_management, "unpin_memory", unpin_memory, raising=False)
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1 << 20)
    assert patcher.model.model_lowvram, "the host did not take the low-VRAM path"
    patcher.unpatch_model(device_to=torch.device("cpu"))
    print(f"\nhost pins offloaded weights: {hasattr(patcher, 'pin_weight_to_device')}; tensors handed to "
          f"pin_memory: {len(handed)}, of them in the file's map: {sum(handed)}; still pinned after unload: "
          f"{len(pinned)}")
    return patcher, before, handed


def test_low_vram_load_pins_offloaded_blocks_off_the_file(q6k_file, model_module, monkeypatch):
    patcher, _, handed = low_vram_round_trip(q6k_file, model_module, monkeypatch)
    if not hasattr(patcher, "pin_weight_to_device"):
        pytest.skip("this host does not pin offloaded weights (ModelPatcher.pin_weight_to_device is new in "
                    "ComfyUI 0.33): nothing is handed to pin_memory")
    assert handed and not any(handed)


def test_low_vram_load_and_unload_keep_the_weights_bytes(q6k_file, model_module, monkeypatch):
    patcher, before, _ = low_vram_round_trip(q6k_file, model_module, monkeypatch)
    after = dict(patcher.model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(after[name].dtype == before[name].dtype for name in before)


def test_the_wan_ffn_runs_our_gguf_linear_through_the_hosts_linear_input_act(q6k_file, model_module):
    """ComfyUI 0.33's Wan FFN calls ``comfy.ops.linear_input_act(ffn[2], ffn[0](x), "gelu_tanh")``: our layer's
    weight is raw blocks, not the host's QuantizedTensor, so the host must take its eager path through our forward,
    in fp16 with the fp16 activations the FFN hands it."""
    import comfy.ops

    loaded = model_module.load_wan_gguf(q6k_file, compute_dtype="fp16")
    ffn = loaded.patcher.model.diffusion_model.blocks[0].ffn
    x = torch.randn(1, 8, DIT_SHAPE["dim"], generator=torch.Generator().manual_seed(0)).half()
    with torch.no_grad():
        out = ffn(x)
        hidden = torch.nn.functional.gelu(ffn[0](x), approximate="tanh")
        expected = ffn[2](hidden)
    print(f"\nhost has linear_input_act: {hasattr(comfy.ops, 'linear_input_act')}; FFN out {tuple(out.shape)} "
          f"{out.dtype}")
    assert out.dtype == torch.float16 and out.shape == (1, 8, DIT_SHAPE["dim"])
    assert torch.isfinite(out).all()
    assert torch.equal(out, expected)


def test_the_archived_dtypes_of_our_layers_are_the_stored_ones_and_the_patcher_is_not_dynamic(q6k_file,
                                                                                            model_module):
    """ComfyUI 0.33 archives every parameter's dtype when it builds the model (``archive_model_dtypes``; ours are
    empty bf16/fp32 meta tensors then) and later sizes and casts weights to it (``ModelPatcherDynamic``,
    ``comfy.memory_management``): a raw uint8 block archived as bf16 would be cast as if it were floats. Our model
    also opts out of dynamic VRAM (a classic ``ModelPatcher``), which on CPU the host does anyway."""
    import comfy.model_management
    import comfy.model_patcher

    loaded = model_module.load_wan_gguf(q6k_file, compute_dtype="bf16")
    quantised = [m for m in loaded.patcher.model.modules() if getattr(m, "gguf_qtype", None) is not None]
    assert quantised and all(m.weight.dtype == torch.uint8 for m in quantised)
    if hasattr(comfy.model_management, "archive_model_dtypes"):
        wrong = [(type(m).__name__, name, getattr(m, f"{name}_comfy_model_dtype"), p.dtype)
                 for m in loaded.patcher.model.diffusion_model.modules()
                 for name, p in m.named_parameters(recurse=False)
                 if getattr(m, f"{name}_comfy_model_dtype", p.dtype) != p.dtype]
        assert wrong == []
    assert isinstance(loaded.patcher, comfy.model_patcher.ModelPatcher)
    dynamic = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
    assert dynamic is None or not isinstance(loaded.patcher, dynamic)
