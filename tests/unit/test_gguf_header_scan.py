"""The bounded GGUF header scan: hostile counts, bad tensor layouts and damaged headers are refused in one line,
large valid metadata stays fast, and a fuzz of a few hundred mutations never loads wrong weights."""
from __future__ import annotations

import multiprocessing
import random
import resource
import struct
import time
from collections import Counter

import gguf
import numpy as np
import pytest
import torch

from wan_accel_kernels.gguf import quantize
from wan_accel_kernels.gguf.qtypes import DEQUANTIZE_TYPES
from wan_accel_kernels.gguf.reader import GGUFFileError, read_gguf

T = gguf.GGMLQuantizationType
CASE_TIMEOUT_S = 10.0
MEMORY_HEADROOM = 2 << 30


def write_sample(path, alignment: int = 64):
    """A small GGUF with four tensor types, a 5-D orig shape, a custom alignment and string/int arrays."""
    gen = torch.Generator().manual_seed(0)
    writer = gguf.GGUFWriter(path, "wan")
    writer.add_custom_alignment(alignment)
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["a", "bc", "def"])
    writer.add_array("wan_accel.sizes", [1, 2, 3])
    writer.add_array("comfy.gguf.orig_shape.patch_embedding.weight", [2, 3, 1, 2, 2])
    writer.add_tensor("blocks.0.ffn.0.weight",
                      quantize(torch.randn(4, 512, generator=gen), T.Q6_K).reshape(4, -1).numpy(), raw_dtype=T.Q6_K)
    writer.add_tensor("blocks.0.ffn.2.weight",
                      quantize(torch.randn(3, 64, generator=gen), T.Q8_0).reshape(3, -1).numpy(), raw_dtype=T.Q8_0)
    writer.add_tensor("patch_embedding.weight", np.arange(24, dtype=np.float32).reshape(2, 12), raw_dtype=T.F32)
    writer.add_tensor("head.bias", np.linspace(-1, 1, 24).astype(np.float16), raw_dtype=T.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def header_fields(data: bytes) -> list[tuple[str, int, int]]:
    """(label, position, width) of every count, length, type, dimension and offset in the header."""
    fields = [("tensor_count", 8, 8), ("kv_count", 16, 8)]
    pos = 24

    def u(fmt: str, at: int) -> int:
        return struct.unpack_from("<" + fmt, data, at)[0]

    def string(label: str) -> str:
        nonlocal pos
        fields.append((label + "_len", pos, 8))
        length = u("Q", pos)
        pos += 8 + length
        return data[pos - length:pos].decode()

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    for _ in range(u("Q", 16)):
        key = string("key")
        fields.append(("kv_type", pos, 4))
        kind = u("I", pos)
        pos += 4
        if kind == 8:
            string("str")
        elif kind == 9:
            fields += [("array_type", pos, 4), ("array_len", pos + 4, 8)]
            item, count = u("I", pos), u("Q", pos + 4)
            pos += 12
            for _ in range(count):
                if item == 8:
                    string("array_str")
                else:
                    pos += sizes[item]
        else:
            if key == "general.alignment":
                fields.append(("alignment", pos, 4))
            pos += sizes[kind]
    for _ in range(u("Q", 8)):
        string("tensor_name")
        fields.append(("n_dims", pos, 4))
        n_dims = u("I", pos)
        pos += 4
        fields += [(f"dim{i}", pos + 8 * i, 8) for i in range(n_dims)]
        pos += 8 * n_dims
        fields += [("ggml_type", pos, 4), ("offset", pos + 4, 8)]
        pos += 12
    fields.append(("header_end", pos, 0))
    return fields


def mutations(data: bytes) -> list[tuple[str, bytes]]:
    """Deterministic hostile variants of ``data``: truncations, huge or off-by-one counts, bad offsets and
    alignments, changed dimensions and types, and bit flips in the header."""
    fields = header_fields(data)
    header_end = fields[-1][1]
    cases: list[tuple[str, bytes]] = []

    def put(label: str, pos: int, width: int, value: int) -> None:
        out = bytearray(data)
        out[pos:pos + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        cases.append((label, bytes(out)))

    for cut in sorted(set(range(0, header_end + 64, 7)) | set(range(header_end, len(data), 97)) | {len(data) - 1}):
        cases.append((f"truncate@{cut}", data[:cut]))
    for label, pos, width in fields[:-1]:
        value = int.from_bytes(data[pos:pos + width], "little")
        candidates = {value + 1, value - 1, 0, 1 << 40, (1 << (8 * width)) - 1}
        if width == 8:
            candidates |= {1 << 63, 1 << 32}
        if label == "offset":
            candidates |= {value - 32, value - 64, value + 32, value + 64, value + 1, 1 << 20}
        if label == "alignment":
            candidates |= {3, 16, 32, 128, 1 << 31, 48}
        if label.startswith("dim"):
            candidates |= {value * 2, value + 32, value + 256}
        if label == "ggml_type":
            candidates |= {int(T.F16), int(T.F32), int(T.Q8_0), int(T.Q4_K), 255}
        for candidate in sorted(candidates):
            if candidate != value:
                put(f"{label}@{pos}={candidate}", pos, width, candidate)
    rng = random.Random(22)
    for _ in range(250):
        pos, bit = rng.randrange(4, header_end), rng.randrange(8)
        out = bytearray(data)
        out[pos] ^= 1 << bit
        cases.append((f"bitflip@{pos}.{bit}", bytes(out)))
    return cases


def _snapshot(model) -> list[tuple[str, int, tuple, bytes]]:
    return [(name, int(t.qtype), tuple(t.shape), t.data.numpy().tobytes()) for name, t in model.tensors.items()]


def _classify(path, original) -> tuple[str, str]:
    try:
        model = read_gguf(path)
    except GGUFFileError as exc:
        message = str(exc)
        clear = path.name in message and "\n" not in message and (
            "truncated or corrupt" in message or "wan_accel.convert" in message)
        return ("clean error" if clear else "unclear error"), message
    except MemoryError as exc:
        return "memory", repr(exc)
    except Exception as exc:  # noqa: BLE001 - any other exception is the defect being counted
        return "raw traceback", f"{type(exc).__name__}: {exc}"
    loaded = _snapshot(model)
    if loaded == original:
        return "clean load", ""
    if len(loaded) != len(original):
        return "wrong data", f"{len(loaded)} tensors instead of {len(original)}"
    outcome = "same weights, renamed"
    for (name, qtype, shape, raw), (_, qtype0, shape0, raw0) in zip(loaded, original):
        if (qtype, raw, int(np.prod(shape))) == (qtype0, raw0, int(np.prod(shape0))):
            continue  # a flipped name or orig_shape key: the model loader refuses the missing or mis-shaped tensor
        if raw != (raw0 + bytes(64))[:len(raw)]:
            return "wrong data", f"{name}: bytes from outside its own slot"
        if shape == shape0 and qtype in DEQUANTIZE_TYPES:
            return "wrong data", f"{name}: read as {gguf.GGMLQuantizationType(qtype).name} {list(shape)}"
        # a type or dimension changed to another that fits the padded slot: no header check can tell (there is no
        # checksum), but the model loader refuses it, by the layer shape check or as a type it cannot dequantise
        outcome = "retyped, refused at model load"
    return outcome, str([(a[0], gguf.GGMLQuantizationType(a[1]).name, a[2]) for a in loaded])


def _worker(connection, original) -> None:
    limit = _address_space() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    while True:
        path = connection.recv()
        if path is None:
            return
        connection.send(_classify(path, original))


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


class _Runner:
    """Runs each case in a forked worker under a memory limit; a case past the timeout is a hang."""

    def __init__(self, original) -> None:
        self.original = original
        self.context = multiprocessing.get_context("fork")
        self.process = None

    def _start(self) -> None:
        self.connection, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child, self.original), daemon=True)
        self.process.start()

    def run(self, path) -> tuple[str, str]:
        if self.process is None or not self.process.is_alive():
            self._start()
        self.connection.send(path)
        if self.connection.poll(CASE_TIMEOUT_S):
            try:
                return self.connection.recv()
            except EOFError:
                pass
        died = self.process.is_alive() is False
        self.process.kill()
        self.process.join()
        self.process = None
        return ("memory", "worker died") if died else ("hang", f"no answer in {CASE_TIMEOUT_S} s")

    def close(self) -> None:
        if self.process is not None:
            self.connection.send(None)
            self.process.join(5)


def test_fuzz_mutations_load_identically_or_fail_cleanly(tmp_path):
    source = write_sample(tmp_path / "sample.gguf")
    data = source.read_bytes()
    original = _snapshot(read_gguf(source))
    runner = _Runner(original)
    outcomes: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    started = time.perf_counter()
    try:
        for index, (label, mutated) in enumerate(mutations(data)):
            path = tmp_path / f"case{index}.gguf"
            path.write_bytes(mutated)
            outcome, detail = runner.run(path)
            outcomes[outcome] += 1
            examples.setdefault(outcome, []).append(f"{label}: {detail[:160]}")
            path.unlink()
    finally:
        runner.close()
    elapsed = time.perf_counter() - started
    print(f"\n{'inputs tried':>30}: {sum(outcomes.values())}  ({elapsed:.1f} s)")
    for outcome in ("clean load", "same weights, renamed", "retyped, refused at model load", "clean error",
                    "unclear error", "raw traceback", "hang", "memory", "wrong data"):
        print(f"{outcome:>30}: {outcomes[outcome]}")
    for outcome in ("retyped, refused at model load", "unclear error", "raw traceback", "hang", "memory", "wrong data"):
        for line in examples.get(outcome, [])[:3]:
            print(f"  {outcome}: {line}")
    bad = {k: examples[k][:5] for k in ("unclear error", "raw traceback", "hang", "memory", "wrong data")
           if outcomes[k]}
    assert not bad, bad
    assert outcomes["clean error"] > 300


def _write_header(path, tensors: list[tuple[str, tuple[int, ...], int, int]], metadata: bytes = b"",
                  kv_count: int = 0, data_bytes: int = 0, alignment: int = 32) -> None:
    """A GGUF written by hand: ``tensors`` as (name, ggml dims, type, data offset), then a sparse data section."""
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), kv_count), metadata]
    for name, dims, qtype, offset in tensors:
        encoded = name.encode()
        parts.append(struct.pack("<Q", len(encoded)) + encoded + struct.pack("<I", len(dims))
                     + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", qtype, offset))
    header = b"".join(parts)
    header += b"\0" * (-len(header) % alignment)
    path.write_bytes(header)
    with path.open("r+b") as handle:
        handle.truncate(len(header) + data_bytes)


def _kv(key: str, kind: int, payload: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", kind) + payload


def test_huge_array_count_is_refused_at_once(tmp_path):
    path = tmp_path / "huge.gguf"
    arch = _kv("general.architecture", 8, struct.pack("<Q", 3) + b"wan")
    huge = _kv("evil.array", 9, struct.pack("<IQ", 0, 1 << 40) + b"\0" * 2000)
    _write_header(path, [("w", (32,), int(T.F32), 0)], arch + huge, kv_count=2, data_bytes=128)
    started = time.perf_counter()
    with pytest.raises(GGUFFileError, match=r"huge.gguf is truncated or corrupt: the length of array evil.array "
                                            r"is 1099511627776, more than the \d+ bytes left") as err:
        read_gguf(path)
    assert time.perf_counter() - started < 0.5
    print(err.value)


@pytest.mark.parametrize("offset, message", [
    ((1 << 64) - 32, r"tensor b has a negative offset \(-32\)"),
    (144, r"tensor b's offset 144 is not a multiple of the alignment 32"),
    (64, r"tensor b at data offset 64 overlaps the tensor before it \(expected 128\)"),
    (4096, r"tensor b \(F32 \[32\], 128 bytes at data offset 4096\) ends outside the 256-byte data section"),
])
def test_bad_tensor_offsets(tmp_path, offset, message):
    path = tmp_path / "bad.gguf"
    _write_header(path, [("a", (32,), int(T.F32), 0), ("b", (32,), int(T.F32), offset)], data_bytes=256)
    with pytest.raises(GGUFFileError, match=r"bad.gguf is truncated or corrupt: " + message):
        read_gguf(path)


@pytest.mark.parametrize("value, kind", [(0, 4), (48, 4), (32, 5)])
def test_wrong_alignment_value(tmp_path, value, kind):
    path = tmp_path / "align.gguf"
    _write_header(path, [("a", (32,), int(T.F32), 0)], _kv("general.alignment", kind, struct.pack("<I", value)),
                  kv_count=1, data_bytes=128)
    with pytest.raises(GGUFFileError, match=rf"general.alignment is {value}, not a power of two stored as uint32"):
        read_gguf(path)


def test_rows_not_a_multiple_of_the_block(tmp_path):
    path = tmp_path / "rows.gguf"
    _write_header(path, [("blocks.0.ffn.0.weight", (511, 4), int(T.Q6_K), 0)], data_bytes=4 * 2 * 210)
    with pytest.raises(GGUFFileError, match=r"tensor blocks.0.ffn.0.weight has rows of 511 values, not a multiple "
                                            r"of Q6_K's block of 256"):
        read_gguf(path)


def test_tensor_bytes_use_python_integers(tmp_path):
    """A shape whose element count wraps int64 (2^32 * 2^32) must not pass as a small tensor."""
    path = tmp_path / "wrap.gguf"
    _write_header(path, [("w", (1 << 32, 1 << 32), int(T.F32), 0)], data_bytes=64)
    with pytest.raises(GGUFFileError, match=r"ends outside the 64-byte data section"):
        read_gguf(path)


def test_large_valid_metadata_is_skipped_quickly(tmp_path):
    """1 MiB of u8 array and 100,000 tokenizer strings load in well under a second, kept as None."""
    path = tmp_path / "big.gguf"
    blob = _kv("big.bytes", 9, struct.pack("<IQ", 0, 1 << 20) + bytes(1 << 20))
    tokens = _kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 100_000)
                 + b"".join(struct.pack("<Q", 3) + b"tok" for _ in range(100_000)))
    arch = _kv("general.architecture", 8, struct.pack("<Q", 3) + b"wan")
    _write_header(path, [("w", (32,), int(T.F32), 0)], arch + blob + tokens, kv_count=3, data_bytes=128)
    started = time.perf_counter()
    model = read_gguf(path)
    elapsed = time.perf_counter() - started
    print(f"1 MiB u8 array + 100,000 strings: {elapsed * 1000:.0f} ms")
    assert model.architecture == "wan" and model.metadata["big.bytes"] is None
    assert model.metadata["tokenizer.ggml.tokens"] is None
    assert elapsed < 1.0


def test_memory_error_is_not_called_corrupt(tmp_path, monkeypatch):
    """Running out of memory is the machine's problem, not the file's: it must not read "truncated or corrupt"."""
    path = write_sample(tmp_path / "fine.gguf")

    def no_memory(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(np, "memmap", no_memory)
    with pytest.raises(MemoryError):
        read_gguf(path)


def test_14b_shaped_header_scans_fast(tmp_path):
    """About 1,300 tensors over a 12 GiB sparse data section: the whole read (scan, map, views) stays fast."""
    path = tmp_path / "wan14b.gguf"
    tensors, offset = [], 0
    for block in range(40):
        for part in range(32):
            dims = (5120, 5120) if part < 12 else (5120,)
            nbytes = dims[0] // 256 * 210 * (dims[1] if len(dims) == 2 else 1) if part < 12 else 5120 * 4
            tensors.append((f"blocks.{block}.part{part}.weight", dims, int(T.Q6_K) if part < 12 else int(T.F32),
                            offset))
            offset += nbytes + (-nbytes % 32)
    shape_keys = b"".join(_kv(f"comfy.gguf.orig_shape.blocks.{b}.part0.weight", 9,
                              struct.pack("<IQ", 5, 2) + struct.pack("<2i", 5120, 5120)) for b in range(40))
    arch = _kv("general.architecture", 8, struct.pack("<Q", 3) + b"wan")
    _write_header(path, tensors, arch + shape_keys, kv_count=41, data_bytes=offset)
    started = time.perf_counter()
    model = read_gguf(path)
    elapsed = time.perf_counter() - started
    print(f"{len(tensors)} tensors, {offset / 2**30:.1f} GiB data: read_gguf {elapsed * 1000:.0f} ms")
    assert len(model.tensors) == len(tensors) == 1280
    assert model.tensors["blocks.39.part0.weight"].shape == (5120, 5120)
    assert elapsed < 2.0
