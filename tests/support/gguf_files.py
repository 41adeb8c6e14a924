"""Writes small GGUF files with chosen tensors and metadata, for reader and loader tests."""
from __future__ import annotations

import os

import gguf
import numpy as np


def write_gguf(path: str | os.PathLike, arch: str, tensors: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]],
               extra_arrays: dict[str, list[int]] | None = None):
    """A GGUF file at ``path`` with ``general.architecture = arch``, raw ``tensors`` and int-array metadata."""
    writer = gguf.GGUFWriter(path, arch)
    for key, value in (extra_arrays or {}).items():
        writer.add_array(key, value)
    for name, (array, qtype) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
