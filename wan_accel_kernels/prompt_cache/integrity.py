"""The seal every cache entry carries: its key, each tensor's dtype and shape, and a checksum, checked on read.

A one-bit flip in a tensor's bytes, in the header or in the metadata, or a valid entry of another key copied over
this one (the review served a ``[1,16,2,8,8]`` latent for a ``[1,16,21,60,104]`` request) fails the check, so the
store reports a miss instead of serving it. BLAKE2b: it hashes the bytes about twice as fast as SHA-256 on a CPU
without SHA units, and a cache needs detection, not a signature.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch

SEAL_KEY = "wan_accel_entry"


class CorruptEntry(ValueError):
    """An entry's bytes are readable but not what was stored under its key."""


def _digest(key: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    digest = hashlib.blake2b(digest_size=32)
    digest.update(json.dumps([key, sorted(metadata.items())]).encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        if data.numel():
            digest.update(memoryview(data.view(torch.uint8).numpy()))
    return digest.hexdigest()


def _layout(tensors: Mapping[str, torch.Tensor]) -> dict[str, list]:
    return {name: [str(tensor.dtype), list(tensor.shape)] for name, tensor in sorted(tensors.items())}


def seal(key: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, str]:
    """``metadata`` plus the seal of ``key``'s entry (key, dtypes, shapes, checksum of every byte)."""
    if SEAL_KEY in metadata:
        raise ValueError(f"metadata key {SEAL_KEY!r} is reserved for the cache's own seal")
    record = {"key": key, "tensors": _layout(tensors), "blake2b": _digest(key, tensors, metadata)}
    return {**metadata, SEAL_KEY: json.dumps(record, separators=(",", ":"))}


def unseal(key: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, str]:
    """The caller's metadata of a read entry; :class:`CorruptEntry` if it is not, bit for bit, ``key``'s entry."""
    try:
        record = json.loads(metadata[SEAL_KEY])
        stored_key, layout, checksum = record["key"], record["tensors"], record["blake2b"]
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptEntry(f"no valid seal ({type(error).__name__}: {error})") from error
    if stored_key != key:
        raise CorruptEntry(f"it holds the entry of key {str(stored_key)[:16]}…, not this one")
    if layout != _layout(tensors):
        raise CorruptEntry(f"its tensors are {_layout(tensors)}, the seal says {layout}")
    rest = {name: value for name, value in metadata.items() if name != SEAL_KEY}
    if _digest(key, tensors, rest) != checksum:
        raise CorruptEntry("its checksum does not match its bytes")
    return rest
