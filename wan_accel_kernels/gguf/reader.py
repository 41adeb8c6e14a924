"""Reads a GGUF model file into raw ggml blocks plus logical shapes, zero-copy over a memory map."""
from __future__ import annotations

import mmap
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from .header_scan import GGUFFileError, HeaderLayout, TensorInfo, corrupt, scan_header

ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."
"""Metadata prefix for shapes over ggml's 4 dimensions (ComfyUI-GGUF's convention, so files interoperate)."""

FLOAT_TYPES = {
    gguf.GGMLQuantizationType.F32: torch.float32,
    gguf.GGMLQuantizationType.F16: torch.float16,
    gguf.GGMLQuantizationType.BF16: torch.bfloat16,
}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor as stored: raw bytes, its ggml type and its logical (torch-order) shape."""

    name: str
    qtype: gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    data: torch.Tensor
    source: str = ""
    """The file's name, for errors raised where the tensor is used."""

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


def _check_header(path: Path) -> None:
    if not path.is_file():
        raise GGUFFileError(f"{path}: file not found")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise GGUFFileError(f"{path.name} is not a GGUF file (starts with {magic!r}, expected b'GGUF'); "
                            "convert a safetensors checkpoint with `python -m wan_accel.convert`")


def _logical_shape(path: Path, info: TensorInfo, metadata: dict[str, object]) -> tuple[int, ...]:
    """The torch-order shape: ComfyUI-GGUF's stored shape where present (it must hold exactly the tensor's
    values), else the ggml dimensions reversed."""
    key = ORIG_SHAPE_KEY + info.name
    if key not in metadata:
        return tuple(reversed(info.dims))
    stored = metadata[key]
    if not isinstance(stored, list) or not all(type(v) is int and v > 0 for v in stored) or len(stored) > 8:
        raise corrupt(path, f"metadata {key} is {stored!r}, not a shape")
    count = 1
    for size in stored:
        count *= size
    if count != info.numel:
        raise corrupt(path, f"metadata {key} gives shape {stored} ({count} values), but tensor {info.name} holds "
                            f"{info.numel} ({info.qtype.name} {list(reversed(info.dims))})")
    return tuple(stored)


def _scan(path: Path) -> HeaderLayout:
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return scan_header(path, buffer, size)


def read_gguf(path: str | os.PathLike) -> GGUFModelFile:
    """Opens ``path`` read-only; tensors stay memory-mapped until a consumer copies them. The header is checked
    by :func:`scan_header` before any tensor is mapped."""
    path = Path(path)
    _check_header(path)
    layout = _scan(path)
    data = np.memmap(path, mode="r")
    if data.size != layout.file_size:
        raise GGUFFileError(f"{path.name} changed while it was being read; load it again")
    tensors: dict[str, GGUFTensor] = {}
    for info in layout.tensors:
        shape = _logical_shape(path, info, layout.metadata)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            raw = torch.from_numpy(data[info.offset:info.offset + info.nbytes])
        tensors[info.name] = GGUFTensor(info.name, info.qtype, shape, raw, path.name)
    if not tensors:
        raise GGUFFileError(f"{path.name} holds no tensors; download it again or re-convert it with "
                            "`python -m wan_accel.convert`")
    architecture = layout.metadata.get("general.architecture")
    return GGUFModelFile(path, architecture if isinstance(architecture, str) else None, tensors, layout.metadata)
