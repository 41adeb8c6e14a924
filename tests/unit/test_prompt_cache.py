"""Prompt-embedding cache: keys, bit-exact round trips, size limit with oldest-first eviction, atomic writes, corrupt entries."""
from __future__ import annotations

import logging
import os

import pytest
import torch
from safetensors.torch import save_file

from wan_accel_kernels.prompt_cache import (
    FileIdentityError,
    PromptCacheStore,
    UncacheableConditioning,
    decode_conditioning,
    encode_conditioning,
    file_identity,
    prompt_key,
)
from wan_accel_kernels.prompt_cache import store as store_module

KEY_A, KEY_B, KEY_C = ("a" * 64), ("b" * 64), ("c" * 64)


def _conditioning(seed: int = 0, tokens: int = 16) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 64, generator=gen), {"pooled_output": None}]]


def _put(store: PromptCacheStore, key: str, seed: int = 0, tokens: int = 16):
    tensors, metadata = encode_conditioning(_conditioning(seed, tokens))
    return store.put(key, tensors, metadata)


def test_conditioning_round_trips_bit_exactly_with_extras():
    cond = torch.randn(1, 7, 4096, dtype=torch.float32)
    mask = torch.tensor([[1, 1, 0]], dtype=torch.int64)
    original = [[cond, {"pooled_output": None, "attention_mask": mask, "strength": 0.5, "tags": ["a", 1]}],
                [cond.to(torch.bfloat16) * 2, {}]]
    tensors, metadata = encode_conditioning(original)
    decoded = decode_conditioning(tensors, metadata)
    assert len(decoded) == 2
    assert torch.equal(decoded[0][0], cond) and decoded[0][0].dtype == torch.float32
    assert torch.equal(decoded[0][1]["attention_mask"], mask)
    assert decoded[0][1]["pooled_output"] is None and decoded[0][1]["strength"] == 0.5
    assert decoded[0][1]["tags"] == ["a", 1]
    assert torch.equal(decoded[1][0], original[1][0]) and decoded[1][0].dtype == torch.bfloat16


def test_unstorable_extras_are_refused():
    with pytest.raises(UncacheableConditioning, match="'hooks' is a object"):
        encode_conditioning([[torch.zeros(1, 1, 4), {"hooks": object()}]])


def test_store_round_trip_through_disk(tmp_path):
    store = PromptCacheStore(tmp_path / "cache", 2**20)
    assert store.get(KEY_A) is None
    path = _put(store, KEY_A, seed=3)
    assert path == tmp_path / "cache" / f"{KEY_A}.safetensors" and path.is_file()
    entry = store.get(KEY_A)
    decoded = decode_conditioning(entry.tensors, entry.metadata)
    assert torch.equal(decoded[0][0], _conditioning(3)[0][0])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]


def test_size_limit_evicts_the_least_recently_used_first(tmp_path):
    entry_bytes = len(_put(PromptCacheStore(tmp_path / "probe", 2**20), KEY_A).read_bytes())
    store = PromptCacheStore(tmp_path / "cache", 2 * entry_bytes + 10)
    for age, key in ((300, KEY_A), (200, KEY_B)):
        path = _put(store, key)
        os.utime(path, (path.stat().st_atime - age, path.stat().st_mtime - age))
    assert store.get(KEY_A) is not None  # touched: now the most recently used
    _put(store, KEY_C)
    assert sorted(p.stem[0] for p in store.entries()) == ["a", "c"]
    assert store.total_bytes() <= store.max_bytes
    print(f"\nentry {entry_bytes} B, limit {store.max_bytes} B: b (least recently used) evicted, a and c kept")


def test_an_entry_larger_than_the_limit_is_not_stored(tmp_path, caplog):
    store = PromptCacheStore(tmp_path, 1000)
    with caplog.at_level(logging.WARNING, logger="wan_accel"):
        assert _put(store, KEY_A, tokens=64) is None
    assert store.entries() == [] and "exceeds the 1000-byte cache limit" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_layout", "empty"])
def test_corrupt_entries_are_misses_and_get_rewritten(tmp_path, caplog, damage):
    store = PromptCacheStore(tmp_path, 2**20)
    path = _put(store, KEY_A, seed=1)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 64)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        save_file({"something": torch.zeros(3)}, str(path), metadata={"other": "x"})
    with caplog.at_level(logging.WARNING, logger="wan_accel"):
        entry = store.get(KEY_A)
        if entry is not None:
            with pytest.raises(KeyError):
                decode_conditioning(entry.tensors, entry.metadata)
            store.discard(KEY_A, "layout does not match")
    assert not path.exists() and "unreadable" in caplog.text
    _put(store, KEY_A, seed=1)
    entry = store.get(KEY_A)
    assert torch.equal(decode_conditioning(entry.tensors, entry.metadata)[0][0], _conditioning(1)[0][0])


def test_a_failed_write_leaves_the_old_entry_and_no_temp_file(tmp_path, monkeypatch):
    store = PromptCacheStore(tmp_path, 2**20)
    _put(store, KEY_A, seed=1)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store_module.os, "replace", crash)
    assert _put(store, KEY_A, seed=2) is None  # not stored; the prompt carries on
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY_A}.safetensors"]
    entry = store.get(KEY_A)
    assert torch.equal(decode_conditioning(entry.tensors, entry.metadata)[0][0], _conditioning(1)[0][0])


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    store = PromptCacheStore(tmp_path, 2**20)
    stale, fresh = tmp_path / f".{KEY_B}.x1.tmp", tmp_path / f".{KEY_C}.x2.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    _put(store, KEY_A)
    assert not stale.exists() and fresh.exists()


def test_keys_change_with_text_encoder_identity_and_options():
    identity = {"size": 10, "mtime_ns": 1, "header_sha256": "0" * 64}
    options = {"storage": "float8_e4m3fn", "compute": "float32", "min_length": 512, "min_padding": 0}
    base = prompt_key("a cat", identity, options)
    assert len(base) == 64 and base == prompt_key("a cat", dict(reversed(identity.items())), options)
    variants = {prompt_key("a cat ", identity, options), prompt_key("a dog", identity, options),
                prompt_key("a cat", {**identity, "size": 11}, options),
                prompt_key("a cat", {**identity, "mtime_ns": 2}, options),
                prompt_key("a cat", {**identity, "header_sha256": "1" * 64}, options),
                prompt_key("a cat", identity, {**options, "storage": "bfloat16"}),
                prompt_key("a cat", identity, {**options, "min_length": 0})}
    assert len(variants) == 7 and base not in variants


def test_file_identity_sees_a_different_header_behind_the_same_size_and_mtime(tmp_path):
    path = tmp_path / "umt5.safetensors"
    save_file({"encoder.a": torch.zeros(4)}, str(path))
    first = file_identity(path)
    stat = path.stat()
    save_file({"encoder.b": torch.zeros(4)}, str(path))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = file_identity(path)
    assert (first["size"], first["mtime_ns"]) == (second["size"], second["mtime_ns"])
    assert first["header_sha256"] != second["header_sha256"]
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(FileIdentityError, match="umt5.safetensors claims a"):
        file_identity(path)
