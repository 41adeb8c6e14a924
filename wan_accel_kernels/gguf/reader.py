"""Reads a GGUF model file into raw ggml blocks plus logical shapes, zero-copy over a memory map."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."
"""Metadata prefix for shapes over ggml's 4 dimensions (ComfyUI-GGUF's convention, so files interoperate)."""

FLOAT_TYPES = {
    gguf.GGMLQuantizationType.F32: torch.float32,
    gguf.GGMLQuantizationType.F16: torch.float16,
    gguf.GGMLQuantizationType.BF16: torch.bfloat16,
}


class GGUFFileError(ValueError):
    """A GGUF file that cannot be used: not GGUF, truncated, corrupt, or of the wrong model family."""


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor as stored: raw bytes, its ggml type and its logical (torch-order) shape."""

    name: str
    qtype: gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    data: torch.Tensor

    @property
    def is_float(self) -> bool:
        return self.qtype in FLOAT_TYPES

    def to_float_tensor(self) -> torch.Tensor:
        """The tensor itself for F32/F16/BF16 entries (a view of the file's bytes)."""
        if not self.is_float:
            raise TypeError(f"{self.name} is {self.qtype.name}, not a float type")
        return self.data.view(FLOAT_TYPES[self.qtype]).view(self.shape)


@dataclass(frozen=True)
class GGUFModelFile:
    """The tensors and scalar metadata of one GGUF file."""

    path: Path
    architecture: str | None
    tensors: dict[str, GGUFTensor]
    metadata: dict[str, object]

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size

    def type_counts(self) -> dict[str, int]:
        """How many tensors of each ggml type the file holds, for logs and node output."""
        counts: dict[str, int] = {}
        for tensor in self.tensors.values():
            counts[tensor.qtype.name] = counts.get(tensor.qtype.name, 0) + 1
        return counts


def _field_value(field: gguf.ReaderField) -> object:
    """Decodes a scalar, string or int-array metadata field; other kinds come back as None."""
    kinds = field.types
    if not kinds:
        return None
    if kinds[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    if kinds[0] == gguf.GGUFValueType.ARRAY:
        if len(kinds) == 2 and kinds[1] != gguf.GGUFValueType.STRING:
            return [int(field.parts[i][0]) for i in field.data]
        return None
    return field.parts[field.data[0]].tolist()[0]


def _check_header(path: Path) -> None:
    if not path.is_file():
        raise GGUFFileError(f"{path}: file not found")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise GGUFFileError(f"{path.name} is not a GGUF file (starts with {magic!r}, expected b'GGUF'); "
                            "convert a safetensors checkpoint with `python -m wan_accel.convert`")


def _logical_shape(tensor: gguf.ReaderTensor, metadata: dict[str, object]) -> tuple[int, ...]:
    stored = metadata.get(ORIG_SHAPE_KEY + tensor.name)
    if isinstance(stored, list):
        return tuple(stored)
    return tuple(int(v) for v in reversed(tensor.shape.tolist()))


def _expected_nbytes(qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    numel = int(np.prod(shape)) if shape else 1
    return numel // block_size * type_size


def read_gguf(path: str | os.PathLike) -> GGUFModelFile:
    """Opens ``path`` read-only; tensors stay memory-mapped until a consumer copies them."""
    path = Path(path)
    _check_header(path)
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as exc:  # gguf raises ValueError, struct.error, IndexError... for damaged files
        raise GGUFFileError(f"{path.name} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                            "download or convert it again") from exc
    metadata = {name: _field_value(field) for name, field in reader.fields.items()}
    tensors: dict[str, GGUFTensor] = {}
    for tensor in reader.tensors:
        qtype = gguf.GGMLQuantizationType(int(tensor.tensor_type))
        shape = _logical_shape(tensor, metadata)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            raw = torch.from_numpy(tensor.data.reshape(-1).view(np.uint8))
        expected = _expected_nbytes(qtype, shape)
        if raw.numel() != expected:
            raise GGUFFileError(f"{path.name}: tensor {tensor.name} holds {raw.numel()} bytes, "
                                f"{qtype.name} {list(shape)} needs {expected}; the file is truncated or corrupt")
        tensors[tensor.name] = GGUFTensor(tensor.name, qtype, shape, raw)
    if not tensors:
        raise GGUFFileError(f"{path.name} holds no tensors; download or convert it again")
    architecture = metadata.get("general.architecture")
    return GGUFModelFile(path, architecture if isinstance(architecture, str) else None, tensors, metadata)
