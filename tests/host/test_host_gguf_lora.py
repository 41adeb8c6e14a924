"""LoRA on our GGUF DiT keeps the weights quantised (the host's own ModelPatcher and LoRA loader, in-process, CPU).

A tiny Q6_K DiT (dim 256, 4 blocks) with a rank-8 LoRA on every block linear: fully loaded, the resident weights
stay within the raw GGUF bytes plus the LoRA's bytes (plus 5 %), the host's model size counts the LoRA, the output
equals the dequantised float model with the same LoRA, and a patch type that is not a plain LoRA is applied per
forward on the dequantised temporary, never stored.
"""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.gguf import dequantize
from wan_accel_kernels.gguf.reader import read_gguf
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_gguf_dit import dit_inputs, write_tiny_gguf_dit
from tests.support.tiny_models import tiny_wan_i2v_state_dict, tiny_wan_lora_state_dict

DIT_SHAPE = dict(dim=256, layers=4, ffn=512)
RANK = 8


@pytest.fixture(scope="module")
def host():
    import_host()
    import comfy.lora
    import comfy.sd
    return comfy


@pytest.fixture(scope="module")
def q6k_file(tmp_path_factory):
    return write_tiny_gguf_dit(tmp_path_factory.mktemp("gguf_lora"), **DIT_SHAPE)


@pytest.fixture(scope="module")
def lora() -> dict[str, torch.Tensor]:
    return tiny_wan_lora_state_dict(tiny_wan_i2v_state_dict(**DIT_SHAPE), rank=RANK)


def _loaded_forward(patcher) -> tuple[torch.Tensor, int]:
    """Output of a full CPU load and the bytes of every parameter and buffer while it is loaded."""
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=0)
    try:
        resident = sum(p.nbytes for p in patcher.model.parameters()) + sum(b.nbytes for b in patcher.model.buffers())
        with torch.no_grad():
            return patcher.model.diffusion_model(*dit_inputs(seed=5)), resident
    finally:
        patcher.unpatch_model()


def _dequantized(path) -> dict[str, torch.Tensor]:
    return {name: (t.to_float_tensor().float() if t.is_float else dequantize(t.data, t.qtype, t.shape)).clone()
            for name, t in read_gguf(path).tensors.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_a_lora_on_every_block_linear_keeps_the_blocks_quantised(host, q6k_file, lora):
    gguf_model = import_pack_module("nodes.gguf_model")
    loaded = gguf_model.load_wan_gguf(q6k_file, "fp32").patcher
    plain, raw_bytes = _loaded_forward(loaded)
    patched, _ = host.sd.load_lora_for_models(loaded, None, lora, 1.0, 0.0)
    with_lora, resident = _loaded_forward(patched)

    reference = host.sd.load_diffusion_model_state_dict(_dequantized(q6k_file), model_options={"dtype": torch.float32})
    expected, _ = _loaded_forward(host.sd.load_lora_for_models(reference, None, lora, 1.0, 0.0)[0])
    lora_bytes = sum(t.nbytes for name, t in lora.items() if not name.endswith(".alpha"))
    print(f"\nresident weights: {raw_bytes / 2**20:.2f} MiB plain, {resident / 2**20:.2f} MiB with a rank-{RANK} "
          f"LoRA of {lora_bytes / 2**20:.2f} MiB ({resident / raw_bytes:.3f}x the plain bytes); host model size "
          f"{patched.model_size() / 2**20:.2f} MiB vs {loaded.model_size() / 2**20:.2f} MiB; output vs the "
          f"dequantised float model with the same LoRA: {_rel(with_lora, expected):.2e}; LoRA effect "
          f"{_rel(with_lora, plain):.3f}")
    assert resident <= (raw_bytes + lora_bytes) * 1.05
    assert resident == raw_bytes  # the LoRA tensors stay with the patcher, the layers keep their raw blocks
    assert patched.model_size() - loaded.model_size() >= lora_bytes
    assert _rel(with_lora, plain) > 0.05
    assert _rel(with_lora, expected) < 1e-5
    quantised = [m for m in patched.model.diffusion_model.modules() if getattr(m, "gguf_qtype", None) is not None]
    assert quantised and all(m.weight.dtype == torch.uint8 and m.gguf_patches is None for m in quantised)


def test_a_patch_that_is_not_a_plain_lora_is_applied_per_forward_without_a_dense_copy(host, q6k_file, lora):
    """LoRA at model strength 0.5 (the host then scales the weight itself): every patch takes the host's own
    ``calculate_weight`` on the dequantised temporary of each forward."""
    gguf_model = import_pack_module("nodes.gguf_model")
    loaded = gguf_model.load_wan_gguf(q6k_file, "fp32").patcher
    plain, raw_bytes = _loaded_forward(loaded)
    patched = loaded.clone()
    patches = host.lora.load_lora(lora, host.lora.model_lora_keys_unet(patched.model, {}))
    patched.add_patches(patches, 1.0, strength_model=0.5)
    out, resident = _loaded_forward(patched)

    reference = host.sd.load_diffusion_model_state_dict(_dequantized(q6k_file), model_options={"dtype": torch.float32})
    reference.add_patches(patches, 1.0, strength_model=0.5)
    expected, _ = _loaded_forward(reference)
    print(f"\nstrength_model 0.5: output vs float model {_rel(out, expected):.2e}; resident {resident} B "
          f"(plain {raw_bytes} B)")
    assert resident == raw_bytes
    assert _rel(out, plain) > 0.1  # halving every block weight changes the output a lot
    assert _rel(out, expected) < 1e-5
