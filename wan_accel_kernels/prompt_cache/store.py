"""A directory of safetensors entries keyed by a hex digest: size limit, oldest-first eviction, atomic writes.

Every entry is ``<key>.safetensors``. Writes go to a temporary file in the same directory, are flushed to disk
and renamed over the entry (``os.replace``), so a reader never sees half a file. A read touches the entry's
mtime, so "oldest" means least recently used. An entry that cannot be read (truncated, garbage, not what the
caller expects) is deleted and reported as a miss: the caller recomputes it and writes it again.
"""
from __future__ import annotations

import contextlib
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

log = logging.getLogger("wan_accel")

KEY_PATTERN = re.compile(r"^[0-9a-f]{16,128}$")
SUFFIX = ".safetensors"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 600.0


class CorruptEntry(ValueError):
    """An entry's bytes are readable but not what was stored (raised by a caller's decoder)."""


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
        """The entry ``key`` (its mtime touched), or None if absent or unreadable (an unreadable one is deleted)."""
        path = self.path_of(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            entry = CacheEntry(load(data), _header_metadata(data))
        except Exception as error:  # safetensors and json raise several types for damaged bytes
            self.discard(key, error)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
        return entry

    def discard(self, key: str, reason: Exception | str) -> None:
        """Deletes the entry ``key`` because it is damaged; the next ``put`` writes it again."""
        log.warning("wan-accel: prompt cache entry %s is unreadable (%s); deleted, it will be rewritten",
                    self.path_of(key).name, reason)
        self.path_of(key).unlink(missing_ok=True)

    def put(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path | None:
        """Writes the entry atomically, then evicts the oldest entries beyond ``max_bytes``; None if too big."""
        data = save({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, metadata=metadata)
        path = self.path_of(key)
        if len(data) > self.max_bytes:
            log.warning("wan-accel: prompt cache entry of %d bytes exceeds the %d-byte cache limit; not stored",
                        len(data), self.max_bytes)
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=TEMP_SUFFIX, dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        self.evict(keep=path)
        return path

    def entries(self) -> list[Path]:
        """Every entry file, oldest (least recently used) first."""
        if not self.directory.is_dir():
            return []
        files = [p for p in self.directory.iterdir() if p.suffix == SUFFIX and KEY_PATTERN.match(p.stem)]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def total_bytes(self) -> int:
        """Bytes held by all entries."""
        return sum(p.stat().st_size for p in self.entries())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Deletes the oldest entries (never ``keep``) until the total fits ``max_bytes``, and stale temp files."""
        self._remove_stale_temps()
        entries = self.entries()
        total = sum(p.stat().st_size for p in entries)
        removed = []
        for path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append(path)
        if removed:
            log.info("wan-accel: prompt cache evicted %d oldest entries to stay under %.1f MiB",
                     len(removed), self.max_bytes / 2**20)
        return removed

    def _remove_stale_temps(self) -> None:
        """Temp files of writers that died mid-write (older than ``STALE_TEMP_SECONDS``)."""
        if not self.directory.is_dir():
            return
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in self.directory.glob(f".*{TEMP_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue
