"""The GGUF reader: shapes, ComfyUI-GGUF's orig_shape metadata, and the messages for bad files."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from wan_accel_kernels.gguf import quantize
from wan_accel_kernels.gguf.reader import GGUFFileError, read_gguf
from tests.support.gguf_files import write_gguf


@pytest.fixture
def sample(tmp_path):
    weight = torch.randn(4, 512, generator=torch.Generator().manual_seed(0))
    blocks = quantize(weight, gguf.GGMLQuantizationType.Q6_K).reshape(4, -1).numpy()
    five_d = np.arange(2 * 3 * 1 * 2 * 2, dtype=np.float32).reshape(2, 12)
    return write_gguf(tmp_path / "sample.gguf", "wan", {
        "blocks.0.ffn.0.weight": (blocks, gguf.GGMLQuantizationType.Q6_K),
        "patch_embedding.weight": (five_d, gguf.GGMLQuantizationType.F32),
    }, extra_arrays={"comfy.gguf.orig_shape.patch_embedding.weight": [2, 3, 1, 2, 2]})


def test_reads_shapes_types_and_architecture(sample):
    model = read_gguf(sample)
    assert model.architecture == "wan"
    ffn = model.tensors["blocks.0.ffn.0.weight"]
    assert ffn.qtype == gguf.GGMLQuantizationType.Q6_K
    assert ffn.shape == (4, 512)
    assert ffn.data.dtype == torch.uint8 and ffn.data.numel() == 4 * 2 * 210
    patch = model.tensors["patch_embedding.weight"]
    assert patch.shape == (2, 3, 1, 2, 2)
    assert torch.equal(patch.to_float_tensor().flatten(), torch.arange(24, dtype=torch.float32))
    assert model.type_counts() == {"Q6_K": 1, "F32": 1}


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(GGUFFileError, match=r"model.gguf is not a GGUF file") as err:
        read_gguf(path)
    print(err.value)


def test_truncated_file_names_the_tensor(sample):
    data = sample.read_bytes()
    sample.write_bytes(data[: len(data) - 700])
    with pytest.raises(GGUFFileError, match=r"sample.gguf.*truncated or corrupt") as err:
        read_gguf(sample)
    print(err.value)


def test_corrupt_header(sample):
    data = bytearray(sample.read_bytes())
    data[8:16] = (2**40).to_bytes(8, "little")
    sample.write_bytes(bytes(data))
    with pytest.raises(GGUFFileError, match=r"sample.gguf is truncated or corrupt") as err:
        read_gguf(sample)
    print(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(GGUFFileError, match="file not found"):
        read_gguf(tmp_path / "absent.gguf")
