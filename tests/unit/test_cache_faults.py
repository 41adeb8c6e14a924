"""Cache fault fuzz: the prompt/encoder cache store under shared folders, read-only folders, a full disk, bit flips and
swapped entries.

Every operation must end as a correct hit or a clean miss (``None``): no exception escapes and no entry whose bytes
differ from what was stored under that key is served. I/O faults give one warning per cause (folder, operation,
errno), however often they repeat; a damaged entry gives one warning and is deleted. The review's numbers on the
old store: 111 of 1,200 puts from three processes sharing a folder raised FileNotFoundError, a full disk or a
read-only folder raised from ``put``, and a one-bit flip or an entry of another shape was served as a hit.
"""
from __future__ import annotations

import errno
import io
import logging
import multiprocessing
import os
import random
import shutil
import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch

from wan_accel_kernels.prompt_cache import PromptCacheStore

KEYS = [f"{i:02x}" * 16 for i in range(24)]
IO_WARNING = "wan-accel: cache folder"
COLUMNS = ("inputs tried", "hits or stored", "clean misses", "raw tracebacks", "wrong data")
TABLE: dict[str, Counter] = {}


def _value(index: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What ``KEYS[index]`` stores: shapes differ between keys (so a swap is an entry of another shape)."""
    gen = torch.Generator().manual_seed(index)
    shape = (1, 16, 1 + index % 5, 4 + index % 3, 4)
    return {"latent": torch.randn(shape, generator=gen)}, {"index": str(index)}


def _same(entry, index: int) -> bool:
    tensors, metadata = _value(index)
    return (entry.metadata == metadata and entry.tensors.keys() == tensors.keys()
            and all(torch.equal(entry.tensors[k], t) and entry.tensors[k].dtype == t.dtype
                    for k, t in tensors.items()))


def _try(row: Counter, tracebacks: list[str], operation, index: int | None = None) -> None:
    """Runs one store operation and files its outcome: correct hit, clean miss, raw traceback or wrong data."""
    row["inputs tried"] += 1
    try:
        result = operation()
    except Exception:
        row["raw tracebacks"] += 1
        tracebacks.append(traceback.format_exc(limit=3))
        return
    if result is None:
        row["clean misses"] += 1
    elif index is None or _same(result, index):
        row["hits or stored"] += 1
    else:
        row["wrong data"] += 1


def _record(name: str, row: Counter) -> Counter:
    TABLE[name] = row
    return row


@pytest.fixture(scope="module", autouse=True)
def print_table():
    yield
    width = max(map(len, TABLE), default=10)
    lines = [f"{'cache fault':<{width}} | " + " | ".join(COLUMNS)]
    lines += [f"{name:<{width}} | " + " | ".join(f"{row[c]:>{len(c)}}" for c in COLUMNS)
              for name, row in TABLE.items()]
    print("\n" + "\n".join(lines))


def _io_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and IO_WARNING in r.getMessage()]


# ------------------------------------------------------------------------------ three processes, one folder

def _worker(args: tuple[str, int, int]) -> tuple[Counter, list[str], int]:
    directory, seed, operations = args
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("wan_accel").addHandler(handler)
    store = PromptCacheStore(directory, max_bytes=3 * 3000)
    rng = random.Random(seed)
    row, tracebacks = Counter(), []
    for _ in range(operations):
        index = rng.randrange(len(KEYS))
        if rng.random() < 0.5:
            _try(row, tracebacks, lambda: store.put(KEYS[index], *_value(index)))
        else:
            _try(row, tracebacks, lambda: store.get(KEYS[index]), index)
    return row, tracebacks, len(warnings)


def test_three_processes_sharing_one_small_folder(tmp_path):
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        results = pool.map(_worker, [(str(tmp_path), seed, 400) for seed in range(3)])
    row = _record("3 processes, 1 folder, ~3 entries", sum((r[0] for r in results), Counter()))
    tracebacks = [t for r in results for t in r[1]]
    assert row["inputs tried"] == 1200
    assert row["raw tracebacks"] == 0, f"{len(tracebacks)} raised, e.g.\n{tracebacks[0]}"
    assert row["wrong data"] == 0
    assert sum(r[2] for r in results) == 0, "a lost race is a miss, not a fault worth a warning"
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"


# ------------------------------------------------------------------------------ read-only folder, full disk, EIO

def _read_only(monkeypatch, directory: Path) -> None:
    """Every write, rename, delete and touch under ``directory`` fails with EROFS, as on a read-only mount."""
    def inside(path) -> bool:
        return str(directory) in os.fspath(path)

    def refuse(original):
        def call(path, *args, **kwargs):
            if inside(path):
                raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
            return original(path, *args, **kwargs)
        return call

    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    for name in ("unlink", "utime", "replace", "rename", "mkdir"):
        monkeypatch.setattr(os, name, refuse(getattr(os, name)))


def test_a_read_only_folder_serves_what_it_has_and_stores_nothing(tmp_path, monkeypatch, caplog):
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    for index in range(6):
        store.put(KEYS[index], *_value(index))
    damaged = store.path_of(KEYS[5])
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x10
    damaged.write_bytes(bytes(data))
    _read_only(monkeypatch, tmp_path)
    row, tracebacks = Counter(), []
    with caplog.at_level(logging.WARNING, logger="wan_accel"):
        for _ in range(3):
            for index in range(len(KEYS)):
                if index >= 6:
                    _try(row, tracebacks, lambda: store.put(KEYS[index], *_value(index)))
                _try(row, tracebacks, lambda: store.get(KEYS[index]), index)
    monkeypatch.undo()
    _record("read-only folder (EROFS)", row)
    assert row["raw tracebacks"] == 0, tracebacks[0]
    assert row["wrong data"] == 0 and row["hits or stored"] == 3 * 5
    warnings = _io_warnings(caplog)
    assert len(warnings) == len(set(warnings)) == 2, warnings  # cannot write; cannot delete the damaged entry
    assert all("Read-only file system" in w for w in warnings)


class _FullDisk(io.FileIO):
    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_is_a_miss_with_one_warning(tmp_path, monkeypatch, caplog, where):
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    store.put(KEYS[0], *_value(0))
    if where == "write":
        monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: _FullDisk(fd, "wb"))
    else:
        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "fsync", full)
    row, tracebacks = Counter(), []
    with caplog.at_level(logging.WARNING, logger="wan_accel"):
        for index in range(1, 21):
            _try(row, tracebacks, lambda: store.put(KEYS[index], *_value(index)))
            _try(row, tracebacks, lambda: store.get(KEYS[index]), index)
        _try(row, tracebacks, lambda: store.get(KEYS[0]), 0)
    monkeypatch.undo()
    _record(f"full disk (ENOSPC at {where})", row)
    assert row["raw tracebacks"] == 0, tracebacks[0]
    assert row["wrong data"] == 0 and row["hits or stored"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [store.path_of(KEYS[0]).name], "no temporary file is left"
    warnings = _io_warnings(caplog)
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings


def test_an_unreadable_entry_is_a_miss_with_one_warning(tmp_path, monkeypatch, caplog):
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    for index in range(4):
        store.put(KEYS[index], *_value(index))

    def failing(self):
        raise OSError(errno.EIO, "Input/output error", str(self))

    monkeypatch.setattr(Path, "read_bytes", failing)
    row, tracebacks = Counter(), []
    with caplog.at_level(logging.WARNING, logger="wan_accel"):
        for _ in range(5):
            for index in range(4):
                _try(row, tracebacks, lambda: store.get(KEYS[index]), index)
    monkeypatch.undo()
    _record("unreadable entry (EIO)", row)
    assert row["raw tracebacks"] == 0, tracebacks[0]
    assert row["clean misses"] == 20
    warnings = _io_warnings(caplog)
    assert len(warnings) == 1 and "Input/output error" in warnings[0], warnings


# ------------------------------------------------------------------------------ bit flips and swapped entries

def test_one_bit_flips_are_never_served(tmp_path, caplog):
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    rng = random.Random(22)
    row, tracebacks = Counter(), []
    flips_served_intact, warnings_per_miss = 0, Counter()
    for index in range(4):
        original = store.put(KEYS[index], *_value(index)).read_bytes()
        for _ in range(60):
            bit = rng.randrange(len(original) * 8)
            data = bytearray(original)
            data[bit // 8] ^= 1 << (bit % 8)
            path = store.path_of(KEYS[index])
            path.write_bytes(bytes(data))
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="wan_accel"):
                _try(row, tracebacks, lambda: store.get(KEYS[index]), index)
            if path.exists():
                flips_served_intact += 1  # served, so equal to the original (else "wrong data")
            else:
                warnings_per_miss[len([r for r in caplog.records if r.levelno >= logging.WARNING])] += 1
            path.write_bytes(original)
    _record("one-bit flips (4 entries x 60)", row)
    assert row["raw tracebacks"] == 0, tracebacks[0]
    assert row["wrong data"] == 0
    assert row["hits or stored"] == flips_served_intact  # only flips that changed nothing the entry means
    assert list(warnings_per_miss) == [1], f"warnings per deleted entry: {dict(warnings_per_miss)}"


def test_an_entry_swapped_for_a_valid_one_of_another_key_is_a_miss_and_removed(tmp_path):
    store = PromptCacheStore(tmp_path / "cache", max_bytes=1 << 20)
    spare = PromptCacheStore(tmp_path / "spare", max_bytes=1 << 20)
    row, tracebacks, left = Counter(), [], 0
    for index in range(len(KEYS)):
        spare.put(KEYS[index], *_value(index))
    for index in range(len(KEYS)):
        for other in (index + 1, index + 5):
            other %= len(KEYS)
            path = store.path_of(KEYS[index])
            path.parent.mkdir(exist_ok=True)
            shutil.copyfile(spare.path_of(KEYS[other]), path)
            _try(row, tracebacks, lambda: store.get(KEYS[index]), index)
            left += path.exists()
    _record("swapped entries (other key/shape)", row)
    assert row["raw tracebacks"] == 0, tracebacks[0]
    assert row["wrong data"] == 0 and row["clean misses"] == 2 * len(KEYS)
    assert left == 0, "a swapped entry is deleted"


def test_the_checks_keep_hits_bit_exact_for_every_dtype(tmp_path):
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    tensors = {"bf16": torch.randn(3, 5).to(torch.bfloat16), "i64": torch.arange(7), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 4), "fp8": torch.randn(4, 4).to(torch.float8_e4m3fn)}
    store.put(KEYS[0], tensors, {"note": "x"})
    entry = store.get(KEYS[0])
    assert entry.metadata == {"note": "x"}
    for name, tensor in tensors.items():
        assert entry.tensors[name].dtype == tensor.dtype and entry.tensors[name].shape == tensor.shape
        assert torch.equal(entry.tensors[name].float(), tensor.float())
