"""umt5 file inspection: the shape to build, Linear weights found, and errors that name the file and what it holds."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from wan_accel_kernels.fp8.umt5_file import UMT5_XXL, TextEncoderFileError, inspect_umt5_file
from tests.support.tiny_models import tiny_wan_i2v_state_dict, write_umt5_stub
from tests.support.umt5_files import SMALL_UMT5, small_umt5_state_dict, write_scaled_fp8_umt5, write_small_umt5


def test_a_complete_small_umt5_gives_its_own_shape(tmp_path):
    info = inspect_umt5_file(write_small_umt5(tmp_path / "small.safetensors"))
    assert info.config == {"num_layers": 2, "d_model": 4096, "d_ff": 1024, "num_heads": 8, "d_kv": 16,
                           "vocab_size": 256}
    assert len(info.linear_weights) == 7 * SMALL_UMT5["layers"]
    assert info.linear_dtypes == {"BF16": 14} and info.weight_dtype == "BF16" and info.sixteen_bit == "BF16"
    sd = small_umt5_state_dict()
    linear = sum(sd[k].numel() for k in info.linear_weights)
    assert info.linear_parameters == linear
    assert info.other_parameters == sum(v.numel() for k, v in sd.items() if k != "spiece_model") - linear
    assert not info.scaled_fp8


def test_the_host_fixture_stub_reads_as_full_size_umt5_xxl(tmp_path):
    info = inspect_umt5_file(write_umt5_stub(tmp_path / "stub.safetensors"))
    assert info.config == UMT5_XXL
    assert info.linear_weights == ("encoder.block.23.layer.1.DenseReluDense.wi_1.weight",)
    assert info.weight_dtype == "F8_E4M3" and info.sixteen_bit == "BF16"


def test_scaled_fp8_and_fp32_files(tmp_path):
    scaled = inspect_umt5_file(write_scaled_fp8_umt5(tmp_path / "scaled.safetensors"))
    assert scaled.scaled_fp8 and scaled.weight_dtype == "F8_E4M3"
    assert scaled.other_parameters == inspect_umt5_file(write_small_umt5(tmp_path / "b.safetensors")).other_parameters
    fp32 = inspect_umt5_file(write_small_umt5(tmp_path / "f.safetensors", dtype=torch.float32))
    assert fp32.weight_dtype == "F32" and fp32.sixteen_bit == "BF16"
    fp16 = inspect_umt5_file(write_small_umt5(tmp_path / "h.safetensors", dtype=torch.float16))
    assert fp16.sixteen_bit == "F16"


def test_a_diffusion_model_is_named_as_such(tmp_path):
    path = tmp_path / "wan_dit.safetensors"
    save_file(tiny_wan_i2v_state_dict(), str(path))
    with pytest.raises(TextEncoderFileError) as error:
        inspect_umt5_file(path)
    message = str(error.value)
    assert message.startswith("wan_dit.safetensors is not a umt5/T5 text encoder: it holds a diffusion model (DiT)")
    assert "models/text_encoders" in message


def test_an_unknown_file_lists_some_of_its_tensors(tmp_path):
    path = tmp_path / "mystery.safetensors"
    save_file({"alpha": torch.zeros(2), "beta": torch.zeros(3)}, str(path))
    with pytest.raises(TextEncoderFileError, match=r"mystery.safetensors is not a umt5/T5 text encoder: it holds "
                                                   r"2 tensors, e.g. 'alpha', 'beta'"):
        inspect_umt5_file(path)


def test_t5_v11_and_narrow_encoders_are_refused_with_the_fix(tmp_path):
    sd = {k: v for k, v in small_umt5_state_dict().items()
          if "relative_attention_bias" not in k or ".block.0." in k}
    path = tmp_path / "t5xxl.safetensors"
    save_file(sd, str(path))
    with pytest.raises(TextEncoderFileError, match=r"t5xxl.safetensors is a T5 v1.1 encoder .* needs umt5_xxl"):
        inspect_umt5_file(path)
    narrow = {k: v[..., :768].contiguous() if v.shape[-1] == 4096 else v for k, v in small_umt5_state_dict().items()}
    narrow = {k: v[:768].contiguous() if k.endswith("layer_norm.weight") or k.endswith("SelfAttention.o.weight")
              or k.endswith("DenseReluDense.wo.weight") else v for k, v in narrow.items()}
    path = tmp_path / "umt5_base.safetensors"
    save_file(narrow, str(path))
    with pytest.raises(TextEncoderFileError, match=r"umt5_base.safetensors is a T5-family encoder of width 768"):
        inspect_umt5_file(path)


def test_missing_or_broken_tokenizer_data(tmp_path):
    path = write_small_umt5(tmp_path / "no_tok.safetensors", drop=("spiece_model",))
    with pytest.raises(TextEncoderFileError, match=r"no_tok.safetensors has no tokenizer: the 'spiece_model' tensor"):
        inspect_umt5_file(path)
    sd = small_umt5_state_dict()
    sd["spiece_model"] = torch.arange(64, dtype=torch.uint8)
    path = tmp_path / "bad_tok.safetensors"
    save_file(sd, str(path))
    with pytest.raises(TextEncoderFileError, match=r"bad_tok.safetensors: its 'spiece_model' tensor is not a valid"):
        inspect_umt5_file(path)


def test_a_file_that_is_not_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(TextEncoderFileError, match=r"model.safetensors could not be read as safetensors"):
        inspect_umt5_file(path)
