"""The safetensors -> GGUF converter: policy, 5-D tensors, metadata, atomic writes, and round-trip error."""
from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wan_accel_kernels.gguf import dequantize
from wan_accel_kernels.gguf.reader import read_gguf
from tests.support.tiny_models import tiny_wan_i2v_state_dict, write_tiny_wan_i2v
from wan_accel.convert import ConversionError, convert, main
from wan_accel.gguf_policy import choose_type, keeps_float

Q6_K = gguf.GGMLQuantizationType.Q6_K
Q8_0 = gguf.GGMLQuantizationType.Q8_0


@pytest.fixture(scope="module")
def tiny_q6k(tmp_path_factory):
    folder = tmp_path_factory.mktemp("convert")
    source = write_tiny_wan_i2v(folder / "tiny.safetensors")
    return source, convert(source, folder / "tiny-Q6_K.gguf", "Q6_K", progress=False)


def test_policy_keeps_sensitive_tensors_float():
    assert keeps_float("blocks.0.norm3.weight", (128,))
    assert keeps_float("blocks.0.modulation", (1, 6, 5120))
    assert keeps_float("patch_embedding.weight", (5120, 36, 1, 2, 2))
    assert keeps_float("head.head.weight", (64, 5120))
    assert keeps_float("img_emb.proj.1.weight", (5120, 1280))
    assert keeps_float("text_embedding.0.weight", (5120, 4096))
    assert not keeps_float("blocks.3.self_attn.q.weight", (5120, 5120))


def test_policy_falls_back_by_row_length():
    assert choose_type("blocks.0.ffn.2.weight", (5120, 13824), torch.bfloat16, Q6_K) == Q6_K
    assert choose_type("blocks.0.self_attn.q.weight", (128, 128), torch.float32, Q6_K) == Q8_0
    assert choose_type("blocks.0.self_attn.q.weight", (128, 100), torch.float32, Q6_K) == gguf.GGMLQuantizationType.F16
    assert choose_type("blocks.0.norm3.weight", (128,), torch.bfloat16, Q6_K) == gguf.GGMLQuantizationType.BF16


def test_converted_file_types_shapes_and_metadata(tiny_q6k):
    source, written = tiny_q6k
    model = read_gguf(written)
    reference = tiny_wan_i2v_state_dict()
    assert model.architecture == "wan"
    assert model.metadata["wan_accel.model_family"] == "wan2.1"
    assert set(model.tensors) == set(reference)
    for name, tensor in model.tensors.items():
        assert tensor.shape == tuple(reference[name].shape), name
    assert model.tensors["blocks.0.ffn.2.weight"].qtype == Q6_K
    assert model.tensors["blocks.0.self_attn.q.weight"].qtype == Q8_0
    assert model.tensors["patch_embedding.weight"].shape == (128, 36, 1, 2, 2)
    assert model.tensors["patch_embedding.weight"].qtype == gguf.GGMLQuantizationType.F32
    assert torch.equal(model.tensors["patch_embedding.weight"].to_float_tensor(), reference["patch_embedding.weight"])


def test_round_trip_error_is_within_the_types_bound(tiny_q6k):
    source, written = tiny_q6k
    reference = tiny_wan_i2v_state_dict()
    bounds = {Q6_K: 0.03, Q8_0: 0.01}
    for name, tensor in read_gguf(written).tensors.items():
        if tensor.is_float:
            continue
        restored = dequantize(tensor.data, tensor.qtype, tensor.shape)
        original = reference[name]
        rel = float((restored - original).norm() / original.norm())
        assert rel < bounds[tensor.qtype], (name, rel)
        via_gguf = gguf.quants.dequantize(tensor.data.numpy(), tensor.qtype).reshape(tensor.shape)
        assert np.array_equal(via_gguf, restored.numpy()), name


def test_file_size_is_about_six_and_a_half_bits_for_q6k(tmp_path):
    big = {"head.modulation": torch.zeros(1, 2, 256), "patch_embedding.weight": torch.zeros(256, 36, 1, 2, 2),
           "blocks.0.ffn.0.weight": torch.randn(1024, 1024)}
    source = tmp_path / "big.safetensors"
    save_file(big, source)
    written = convert(source, tmp_path / "big.gguf", "Q6_K", progress=False)
    quantised_bytes = 1024 * 1024 * 210 / 256
    float_bytes = (2 * 256 + 256 * 36 * 4) * 4
    assert written.stat().st_size < (quantised_bytes + float_bytes) * 1.02


def test_refuses_to_overwrite_without_force(tiny_q6k, tmp_path):
    source, _ = tiny_q6k
    target = tmp_path / "out.gguf"
    target.write_bytes(b"keep me")
    with pytest.raises(ConversionError, match="exists; pass --force"):
        convert(source, target, "Q8_0", progress=False)
    assert target.read_bytes() == b"keep me"
    convert(source, target, "Q8_0", force=True, progress=False)
    assert read_gguf(target).tensors["blocks.0.ffn.2.weight"].qtype == Q8_0
    assert not (tmp_path / "out.gguf.part").exists()


def test_rejects_a_non_wan_checkpoint(tmp_path, capsys):
    source = tmp_path / "flux.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(8, 8)}, source)
    assert main([str(source), str(tmp_path / "flux.gguf")]) == 2
    message = capsys.readouterr().err
    print(message)
    assert "flux.safetensors is not a Wan 2.1 DiT checkpoint" in message
    assert not (tmp_path / "flux.gguf").exists()


def test_cli_writes_the_file(tiny_q6k, tmp_path, capsys):
    source, _ = tiny_q6k
    assert main([str(source), str(tmp_path / "cli.gguf"), "--type", "Q6_K"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "cli.gguf").stat().st_size > 0


def _truncated(tmp_path):
    source = write_tiny_wan_i2v(tmp_path / "cut.safetensors")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    return source


@pytest.mark.parametrize("make, problem", [
    (lambda tmp: (tmp / "notes.txt").write_text("a text file, not a checkpoint\n") and tmp / "notes.txt",
     "header too large"),
    (_truncated, "incomplete metadata, file not fully covered"),
])
def test_unreadable_input_is_one_line_naming_the_file_and_the_problem(tmp_path, capsys, make, problem):
    source = make(tmp_path)
    assert main([str(source), str(tmp_path / "out.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {source}: not a readable .safetensors file ({problem}); pass a Wan 2.1 DiT")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.part").exists()
