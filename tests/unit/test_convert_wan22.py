"""Wan 2.2 through the converter: I2V A14B experts convert tensor for tensor (no CLIP branch added), the TI2V 5B and
fp8_scaled checkpoints are refused by name, and the tiny Wan 2.2 fixtures have the released files' layout."""
from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.support.q4k_blocks import quantize_q4_k
from tests.support.tiny_models import tiny_wan_i2v_state_dict
from tests.support.tiny_wan22 import (CLIP_BRANCH, tiny_wan22_expert_state_dict, tiny_wan22_lora_state_dict,
                                      tiny_wan22_ti2v_state_dict, write_tiny_wan22_expert, write_tiny_wan22_gguf_expert,
                                      write_tiny_wan22_ti2v)
from wan_accel.convert import main
from wan_accel_kernels.gguf import dequantize
from wan_accel_kernels.gguf.reader import read_gguf
from wan_accel_kernels.wan_layout import unsupported_reason, wan_layout

Q6_K = gguf.GGMLQuantizationType.Q6_K
REFUSAL_5B = ("wan2.2_ti2v_5B_fp16.safetensors is a Wan 2.2 TI2V 5B model (48-channel latents); wan-accel supports "
              "Wan 2.1 I2V 14B and Wan 2.2 I2V A14B experts")


def _shapes(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + name: tuple(tensor.shape) for name, tensor in state_dict.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_the_tiny_experts_are_wan21_blocks_without_the_clip_vision_branch():
    high, low = tiny_wan22_expert_state_dict("high"), tiny_wan22_expert_state_dict("low")
    wan21 = tiny_wan_i2v_state_dict(dim=256, layers=2, ffn=512)
    assert set(high) == set(low) == {k for k in wan21 if not any(part in k for part in CLIP_BRANCH)}
    assert set(wan21) - set(high) >= {"img_emb.proj.0.bias", "blocks.0.cross_attn.k_img.weight"}
    assert high["patch_embedding.weight"].shape == (256, 36, 1, 2, 2) and high["head.head.weight"].shape == (64, 256)
    assert _rel(high["blocks.0.self_attn.q.weight"], low["blocks.0.self_attn.q.weight"]) > 1.0


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_the_layout_tells_wan21_i2v_a_wan22_expert_and_the_5b_apart(prefix):
    wan21 = wan_layout(_shapes(tiny_wan_i2v_state_dict(), prefix))
    expert = wan_layout(_shapes(tiny_wan22_expert_state_dict("low"), prefix))
    ti2v = wan_layout(_shapes(tiny_wan22_ti2v_state_dict(), prefix))
    assert (wan21.variant, expert.variant, ti2v.variant) == ("wan2.1-i2v", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b")
    assert (expert.in_channels, expert.out_channels, ti2v.in_channels, ti2v.out_channels) == (36, 16, 48, 48)
    assert wan21.supported and expert.supported and not ti2v.supported
    assert unsupported_reason("x.gguf", expert) is None
    assert unsupported_reason("x.gguf", ti2v).startswith(
        "x.gguf is a Wan 2.2 TI2V 5B model (48-channel latents); this loader supports Wan 2.1 I2V 14B and Wan 2.2 "
        "I2V A14B experts")
    assert wan_layout({"blocks.0.ffn.0.weight": (8, 8)}) is None


@pytest.mark.parametrize("qtype", ["Q6_K", "Q8_0"])
def test_an_expert_converts_tensor_for_tensor_with_the_wan21_policy(tmp_path, qtype):
    written = write_tiny_wan22_gguf_expert(tmp_path, "high", qtype)
    model = read_gguf(written)
    reference = tiny_wan22_expert_state_dict("high")
    assert set(model.tensors) == set(reference)  # nothing added for the missing CLIP-vision branch
    assert model.metadata["wan_accel.model_family"] == "wan2.2-i2v-a14b"
    assert model.tensors["patch_embedding.weight"].shape == (256, 36, 1, 2, 2)
    block_linears = [t for name, t in model.tensors.items() if name.startswith("blocks.") and len(t.shape) == 2]
    assert len(block_linears) == 2 * 10 and {t.qtype.name for t in block_linears} == {qtype}
    kept = {name for name, t in model.tensors.items() if t.is_float}
    assert {"text_embedding.0.weight", "head.head.weight", "blocks.1.modulation"} <= kept
    errors = [_rel(dequantize(t.data, t.qtype, t.shape), reference[t.name]) for t in block_linears]
    print(f"\n{qtype} expert block linears: relative RMSE mean {np.mean(errors):.5f}, max {max(errors):.5f}")
    assert max(errors) < {"Q6_K": 0.02, "Q8_0": 0.006}[qtype]  # Gaussian weights: 64 resp. 255 levels per block


def test_the_5b_ti2v_is_refused_naming_the_file_and_what_is_supported(tmp_path, capsys):
    source = write_tiny_wan22_ti2v(tmp_path / "wan2.2_ti2v_5B_fp16.safetensors")
    destination = tmp_path / "ti2v-Q6_K.gguf"
    assert main([str(source), str(destination)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {REFUSAL_5B}") and "\n" not in err
    assert not destination.exists() and not list(tmp_path.glob("*.part"))


def test_an_fp8_scaled_expert_is_refused_with_the_fp16_file_as_the_fix(tmp_path, capsys):
    """The host template's fp8_scaled files: fp8 weights, a per-tensor ``scale_weight`` and a ``scaled_fp8`` marker."""
    state_dict = tiny_wan22_expert_state_dict("low")
    scaled = {}
    for name, tensor in state_dict.items():
        if name.startswith("blocks.") and tensor.ndim == 2:
            scale = tensor.abs().amax() / 448.0
            scaled[name] = (tensor / scale).to(torch.float8_e4m3fn)
            scaled[name.replace(".weight", ".scale_weight")] = scale.reshape(1)
        else:
            scaled[name] = tensor
    scaled["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    source = tmp_path / "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
    save_file(scaled, str(source))
    assert main([str(source), str(tmp_path / "low-Q6_K.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors is an fp8_scaled checkpoint "
                          "(blocks.0.cross_attn.k.scale_weight and 20 more scale tensors)")
    assert "convert the fp16 or bf16 file of the same model instead" in err and "\n" not in err


def test_a_prefixed_expert_checkpoint_converts_to_unprefixed_names(tmp_path, capsys):
    state_dict = {f"model.diffusion_model.{k}": v for k, v in tiny_wan22_expert_state_dict("high").items()}
    source = tmp_path / "prefixed.safetensors"
    save_file(state_dict, str(source))
    assert main([str(source), str(tmp_path / "prefixed-Q8_0.gguf"), "--type", "Q8_0"]) == 0
    model = read_gguf(tmp_path / "prefixed-Q8_0.gguf")
    assert set(model.tensors) == set(tiny_wan22_expert_state_dict("high"))
    assert model.metadata["wan_accel.model_family"] == "wan2.2-i2v-a14b"


def test_the_q4k_fixture_encoder_writes_blocks_that_gguf_py_and_our_dequantiser_read_alike():
    values = np.random.default_rng(0).standard_normal((16, 512)).astype(np.float32) * 0.05
    blocks = quantize_q4_k(values)
    theirs = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K)
    ours = dequantize(torch.from_numpy(blocks), gguf.GGMLQuantizationType.Q4_K, (16, 512))
    error = float(np.linalg.norm(theirs - values) / np.linalg.norm(values))
    assert blocks.shape == (16, 2 * 144) and torch.equal(ours, torch.from_numpy(theirs))
    assert 0.05 < error < 0.09  # 16 levels over each 32-value range: about 1/sqrt(12) of a 4-sigma/15 step


def test_the_q4k_expert_keeps_the_policys_float_tensors(tmp_path):
    model = read_gguf(write_tiny_wan22_gguf_expert(tmp_path, "low", "Q4_K"))
    types = {name: t.qtype.name for name, t in model.tensors.items()}
    assert types["blocks.0.ffn.0.weight"] == types["blocks.1.cross_attn.o.weight"] == "Q4_K"
    assert types["patch_embedding.weight"] == types["text_embedding.0.weight"] == "F32"
    assert model.tensors["patch_embedding.weight"].shape == (256, 36, 1, 2, 2)


def test_the_lightx2v_style_lora_has_the_lightning_keys_and_half_alpha():
    lora = tiny_wan22_lora_state_dict(tiny_wan22_expert_state_dict("high"), rank=8)
    assert lora["diffusion_model.blocks.1.cross_attn.k.lora_A.weight"].shape == (8, 256)
    assert lora["diffusion_model.blocks.1.ffn.2.lora_B.weight"].shape == (256, 8)
    assert float(lora["diffusion_model.blocks.0.self_attn.q.alpha"]) == 4.0
    assert len(lora) == 2 * 10 * 3 and not any("k_img" in key for key in lora)


def test_a_wan22_expert_safetensors_file_has_unprefixed_keys(tmp_path):
    from safetensors import safe_open

    with safe_open(write_tiny_wan22_expert(tmp_path / "e.safetensors", "high"), framework="pt") as handle:
        assert "head.modulation" in handle.keys() and "img_emb.proj.0.bias" not in handle.keys()
