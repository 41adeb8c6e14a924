"""A bounded scan of a GGUF file's header in plain Python integers, before any tensor is mapped.

Every count and size is checked against the bytes left in the file before anything is read or allocated, and
the tensor layout (alignment, offsets, sizes, block-aligned rows) is checked against the data section, so a
damaged or hostile header is refused in one line instead of exhausting memory or reading the wrong bytes as
weights. Metadata the loader never needs (string arrays such as tokenizers, long arrays) is skipped by size,
not decoded item by item.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

FIX = "download it again or re-convert it with `python -m wan_accel.convert`"
MAX_NAME_BYTES = 65536
"""Longest key or tensor name accepted (ggml itself caps tensor names at 64 bytes)."""
MAX_DECODED_STRING = 65536
"""Longer string values are skipped (kept as None): the loader reads only short names."""
MAX_DECODED_ARRAY = 65536
"""Longer numeric arrays are skipped (kept as None): the loader reads only shapes of up to 5 items."""
MAX_ARRAY_DEPTH = 8
MAX_DIMS = 4
"""ggml's GGML_MAX_DIMS; longer shapes travel in ``comfy.gguf.orig_shape.*`` metadata."""
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
V = gguf.GGUFValueType
SCALARS: dict[int, str] = {V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I",
                           V.INT32: "i", V.FLOAT32: "f", V.BOOL: "?", V.UINT64: "Q", V.INT64: "q",
                           V.FLOAT64: "d"}


class GGUFFileError(ValueError):
    """A GGUF file that cannot be used: not GGUF, truncated, corrupt, or of the wrong model family."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header, checked: ``dims`` in ggml order (innermost first), ``offset`` absolute."""

    name: str
    qtype: gguf.GGMLQuantizationType
    dims: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        count = 1
        for size in self.dims:
            count *= size
        return count


@dataclass(frozen=True)
class HeaderLayout:
    """What the scan found: decoded metadata (skipped values are None) and the checked tensor layout."""

    file_size: int
    alignment: int
    data_start: int
    metadata: dict[str, object]
    tensors: tuple[TensorInfo, ...]


def corrupt(path: Path, detail: str) -> GGUFFileError:
    """The one-line error for a damaged file, naming it, what is wrong and the fix."""
    return GGUFFileError(f"{path.name} is truncated or corrupt: {detail}; {FIX}")


class _Cursor:
    """Reads little-endian values from the mapped file, refusing any read past its end."""

    def __init__(self, buffer: mmap.mmap | bytes, size: int, path: Path) -> None:
        self.buffer, self.size, self.path, self.pos = buffer, size, path, 0

    @property
    def left(self) -> int:
        return self.size - self.pos

    def skip(self, count: int, what: str) -> int:
        if count > self.left:
            raise corrupt(self.path, f"{what} needs {count} bytes at offset {self.pos}, only {self.left} remain")
        start, self.pos = self.pos, self.pos + count
        return start

    def unpack(self, fmt: str, what: str) -> tuple:
        start = self.skip(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.buffer, start)

    def u32(self, what: str) -> int:
        return self.unpack("I", what)[0]

    def u64(self, what: str) -> int:
        return self.unpack("Q", what)[0]

    def count(self, what: str, item_bytes: int) -> int:
        """A u64 count of items at least ``item_bytes`` long each, refused when they cannot fit in the file."""
        value = self.u64(what)
        if value * item_bytes > self.left:
            raise corrupt(self.path, f"{what} is {value}, more than the {self.left} bytes left in the file hold")
        return value

    def name(self, what: str) -> str:
        length = self.count(f"the length of {what}", 1)
        if length > MAX_NAME_BYTES:
            raise corrupt(self.path, f"{what} is {length} bytes long (at most {MAX_NAME_BYTES})")
        start = self.skip(length, what)
        try:
            return bytes(self.buffer[start:start + length]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise corrupt(self.path, f"{what} at offset {start} is not UTF-8 ({exc.reason})") from None

    def string_value(self, what: str) -> str | None:
        length = self.count(f"the length of {what}", 1)
        start = self.skip(length, what)
        if length > MAX_DECODED_STRING:
            return None
        return bytes(self.buffer[start:start + length]).decode("utf-8", errors="replace")


def _value(cursor: _Cursor, kind: int, key: str, depth: int = 0) -> object:
    """Reads one metadata value of type ``kind``; skipped kinds come back as None."""
    if kind in SCALARS:
        return cursor.unpack(SCALARS[kind], f"the value of {key}")[0]
    if kind == V.STRING:
        return cursor.string_value(f"the string {key}")
    if kind != V.ARRAY:
        raise corrupt(cursor.path, f"metadata {key} has unknown value type {kind}")
    if depth >= MAX_ARRAY_DEPTH:
        raise corrupt(cursor.path, f"metadata {key} nests arrays more than {MAX_ARRAY_DEPTH} deep")
    item_kind = cursor.u32(f"the item type of {key}")
    if item_kind in SCALARS:
        fmt = SCALARS[item_kind]
        length = cursor.count(f"the length of array {key}", struct.calcsize(fmt))
        start = cursor.skip(length * struct.calcsize(fmt), f"array {key}")
        if length > MAX_DECODED_ARRAY:
            return None
        return list(struct.unpack_from(f"<{length}{fmt}", cursor.buffer, start))
    if item_kind not in (V.STRING, V.ARRAY):
        raise corrupt(cursor.path, f"array {key} has unknown item type {item_kind}")
    length = cursor.count(f"the length of array {key}", 8 if item_kind == V.STRING else 12)
    for _ in range(length):
        if item_kind == V.STRING:
            cursor.skip(cursor.count(f"the length of a string in {key}", 1), f"a string in {key}")
        else:
            _value(cursor, V.ARRAY, key, depth + 1)
    return None


def _metadata(cursor: _Cursor, kv_count: int) -> tuple[dict[str, object], dict[str, int]]:
    """The decoded metadata and each key's stored value type."""
    metadata: dict[str, object] = {}
    kinds: dict[str, int] = {}
    for index in range(kv_count):
        key = cursor.name(f"metadata key {index}")
        if key in metadata:
            raise corrupt(cursor.path, f"metadata key {key} appears twice")
        kinds[key] = cursor.u32(f"the value type of {key}")
        metadata[key] = _value(cursor, kinds[key], key)
    return metadata, kinds


def _alignment(path: Path, metadata: dict[str, object], kinds: dict[str, int]) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if kinds["general.alignment"] != V.UINT32 or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise corrupt(path, f"general.alignment is {value!r}, not a power of two stored as uint32")
    return value


def _tensor_entry(cursor: _Cursor, index: int) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.name(f"the name of tensor {index}")
    n_dims = cursor.u32(f"the dimension count of {name}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise corrupt(cursor.path, f"tensor {name} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})")
    dims = cursor.unpack(f"{n_dims}Q", f"the dimensions of {name}")
    raw_type = cursor.u32(f"the type of {name}")
    offset = cursor.u64(f"the offset of {name}")
    return name, dims, raw_type, offset


def _check_tensor(path: Path, name: str, dims: tuple[int, ...], raw_type: int, offset: int,
                  alignment: int, data_start: int, data_size: int) -> TensorInfo:
    try:
        qtype = gguf.GGMLQuantizationType(raw_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise corrupt(path, f"tensor {name} has unknown ggml type {raw_type}") from None
    if 0 in dims:
        raise corrupt(path, f"tensor {name} has an empty dimension {list(dims)}")
    if dims[0] % block:
        raise corrupt(path, f"tensor {name} has rows of {dims[0]} values, not a multiple of "
                            f"{qtype.name}'s block of {block}")
    numel = 1
    for size in dims:
        numel *= size
    nbytes = -(-numel // block) * type_size
    if offset >= 2**63:
        raise corrupt(path, f"tensor {name} has a negative offset ({offset - 2**64})")
    if offset % alignment:
        raise corrupt(path, f"tensor {name}'s offset {offset} is not a multiple of the alignment {alignment}")
    if offset + nbytes > data_size:
        raise corrupt(path, f"tensor {name} ({qtype.name} {list(reversed(dims))}, {nbytes} bytes at data offset "
                            f"{offset}) ends outside the {data_size}-byte data section")
    return TensorInfo(name, qtype, tuple(dims), data_start + offset, nbytes)


def _check_packing(path: Path, tensors: list[TensorInfo], alignment: int, data_start: int, file_size: int) -> None:
    """Writers (gguf-py, llama.cpp) pack tensors back to back, each padded to the alignment: an overlap, a gap or
    trailing bytes mean a size, an offset or the data start is wrong, so the bytes would be the wrong weights."""
    if not tensors:
        return
    expected = data_start
    for info in sorted(tensors, key=lambda t: t.offset):
        if info.offset != expected:
            relation = "overlaps the tensor before it" if info.offset < expected else "leaves a gap before it"
            raise corrupt(path, f"tensor {info.name} at data offset {info.offset - data_start} {relation} "
                                f"(expected {expected - data_start})")
        expected = info.offset + -(-info.nbytes // alignment) * alignment
    end = max(t.offset + t.nbytes for t in tensors)
    if not end <= file_size <= expected:
        raise corrupt(path, f"the file holds {file_size - end} bytes after its last tensor "
                            f"(at most {expected - end} padding)")


def scan_header(path: Path, buffer: mmap.mmap | bytes, file_size: int) -> HeaderLayout:
    """Checks the GGUF header in ``buffer`` (the whole file, ``file_size`` bytes) and returns its layout."""
    cursor = _Cursor(buffer, file_size, path)
    if cursor.unpack("4s", "the GGUF magic")[0] != b"GGUF":
        raise GGUFFileError(f"{path.name} is not a GGUF file; convert a safetensors checkpoint with "
                            "`python -m wan_accel.convert`")
    version = cursor.u32("the GGUF version")
    if version & 0xFFFF == 0:
        raise GGUFFileError(f"{path.name} is a big-endian GGUF file, which this loader does not read; "
                            "re-convert it with `python -m wan_accel.convert`")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFileError(f"{path.name} is GGUF version {version}; this loader reads versions "
                            f"{', '.join(map(str, SUPPORTED_VERSIONS))}: re-convert it with "
                            "`python -m wan_accel.convert`")
    tensor_count = cursor.count("the tensor count", 24)
    kv_count = cursor.count("the metadata key-value count", 13)
    decoded, kinds = _metadata(cursor, kv_count)
    metadata: dict[str, object] = {"GGUF.version": version, "GGUF.tensor_count": tensor_count,
                                   "GGUF.kv_count": kv_count, **decoded}
    alignment = _alignment(path, metadata, kinds)
    entries = [_tensor_entry(cursor, index) for index in range(tensor_count)]
    data_start = -(-cursor.pos // alignment) * alignment
    if entries and data_start > file_size:
        raise corrupt(path, f"the data section starts at {data_start}, past the file's {file_size} bytes")
    names = set()
    tensors = []
    for name, dims, raw_type, offset in entries:
        if name in names:
            raise corrupt(path, f"tensor {name} appears twice")
        names.add(name)
        tensors.append(_check_tensor(path, name, dims, raw_type, offset, alignment, data_start,
                                     file_size - data_start))
    _check_packing(path, tensors, alignment, data_start, file_size)
    return HeaderLayout(file_size, alignment, data_start, metadata, tuple(tensors))
