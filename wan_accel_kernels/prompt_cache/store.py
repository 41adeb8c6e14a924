"""A directory of safetensors entries keyed by a hex digest: size limit, oldest-first eviction, atomic writes.

Every entry is ``<key>.safetensors``. Writes go to a temporary file in the same directory, are flushed to disk
and renamed over the entry (``os.replace``), so a reader never sees half a file. A read touches the entry's
mtime, so "oldest" means least recently used. Every entry carries a seal (its key, dtypes, shapes and a checksum,
:mod:`.integrity`); an entry that cannot be read or fails its seal (a bit flip, another key's entry copied over
it) is deleted and reported as a miss: the caller recomputes it and writes it again.

The cache never fails a prompt: an I/O fault (a full disk, a read-only folder, an entry another process evicted
a moment ago) is a miss or an entry not stored, with one warning per cause (:mod:`.faults`). Several processes
may share one folder.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load, save

from .faults import cache_fault
from .integrity import CorruptEntry, seal, unseal

log = logging.getLogger("wan_accel")

KEY_PATTERN = re.compile(r"^[0-9a-f]{16,128}$")
SUFFIX = ".safetensors"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 600.0

__all__ = ["CacheEntry", "CorruptEntry", "PromptCacheStore"]


@dataclass(frozen=True)
class CacheEntry:
    """The tensors and string metadata of one entry."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


def _header_metadata(data: bytes) -> dict[str, str]:
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    metadata = header.get("__metadata__") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CorruptEntry("metadata is not a string map")
    return metadata


class PromptCacheStore:
    """Keyed safetensors files in ``directory``, at most ``max_bytes`` in total."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)

    def path_of(self, key: str) -> Path:
        """Where the entry ``key`` lives."""
        if not KEY_PATTERN.match(key):
            raise ValueError(f"cache keys are lowercase hex digests, got {key!r}")
        return self.directory / f"{key}{SUFFIX}"

    def get(self, key: str) -> CacheEntry | None:
        """The entry ``key`` (its mtime touched), or None if absent, unreadable or not sealed as ``key``'s (such an
        entry is deleted)."""
        path = self.path_of(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            cache_fault(self.directory, "read an entry", error)
            return None
        try:
            tensors = load(data)
            metadata = unseal(key, tensors, _header_metadata(data))
        except Exception as error:  # safetensors and json raise several types for damaged bytes
            self.discard(key, error)
            return None
        try:
            os.utime(path)
        except OSError:  # evicted meanwhile, or a read-only folder: the entry read is still good
            pass
        return CacheEntry(tensors, metadata)

    def discard(self, key: str, reason: Exception | str) -> None:
        """Deletes the entry ``key`` because it is damaged; the next ``put`` writes it again."""
        log.warning("wan-accel: prompt cache entry %s is unreadable (%s); deleted, it will be rewritten",
                    self.path_of(key).name, reason)
        try:
            self.path_of(key).unlink(missing_ok=True)
        except OSError as error:
            cache_fault(self.directory, "delete a damaged entry", error)

    def put(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path | None:
        """Writes the entry atomically, then evicts the oldest entries beyond ``max_bytes``; None if it was not
        stored (larger than the limit, or an I/O fault, logged once per cause)."""
        tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
        data = save(tensors, metadata=seal(key, tensors, metadata))
        path = self.path_of(key)
        if len(data) > self.max_bytes:
            log.warning("wan-accel: prompt cache entry of %d bytes exceeds the %d-byte cache limit; not stored",
                        len(data), self.max_bytes)
            return None
        try:
            self._write(path, data)
        except OSError as error:
            cache_fault(self.directory, "write an entry", error)
            return None
        self.evict(keep=path)
        return path

    def _write(self, path: Path, data: bytes) -> None:
        """``data`` to a flushed temporary file renamed over ``path``; no temporary file is left on failure."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=TEMP_SUFFIX, dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, path)
        except BaseException:
            try:
                Path(temp_name).unlink(missing_ok=True)
            except OSError as error:
                cache_fault(self.directory, "remove a temporary file", error)
            raise

    def _sized_entries(self) -> list[tuple[Path, int]]:
        """``(entry, size)`` of every entry still there, oldest (least recently used) first."""
        try:
            names = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        except OSError as error:
            cache_fault(self.directory, "list the entries", error)
            return []
        found = []
        for path in names:
            if path.suffix != SUFFIX or not KEY_PATTERN.match(path.stem):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            found.append((stat.st_mtime_ns, path.name, path, stat.st_size))
        return [(path, size) for _, _, path, size in sorted(found)]

    def entries(self) -> list[Path]:
        """Every entry file, oldest (least recently used) first."""
        return [path for path, _ in self._sized_entries()]

    def total_bytes(self) -> int:
        """Bytes held by all entries."""
        return sum(size for _, size in self._sized_entries())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Deletes the oldest entries (never ``keep``) until the total fits ``max_bytes``, and stale temp files.

        Other processes may evict the same entries at the same time: one already gone counts as removed."""
        self._remove_stale_temps()
        entries = self._sized_entries()
        total = sum(size for _, size in entries)
        removed = []
        for path, size in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                cache_fault(self.directory, "evict an entry", error)
                break
            total -= size
            removed.append(path)
        if removed:
            log.info("wan-accel: prompt cache evicted %d oldest entries to stay under %.1f MiB",
                     len(removed), self.max_bytes / 2**20)
        return removed

    def _remove_stale_temps(self) -> None:
        """Temp files of writers that died mid-write (older than ``STALE_TEMP_SECONDS``)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in self.directory.glob(f".*{TEMP_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as error:
                cache_fault(self.directory, "remove a stale temporary file", error)
