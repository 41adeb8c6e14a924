"""Cache keys for prompt embeddings: the prompt, the encoder file's identity and every option that changes the output.

A file's identity is its size, its mtime and the SHA-256 of its safetensors header (names, dtypes, shapes and
offsets of every tensor): cheap to compute for an 11 GB file, and it changes when the file is replaced by a
different one even if size and mtime happen to match.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

KEY_VERSION = 1
"""Bumped whenever the stored layout or the encode path changes, so old entries stop matching."""
MAX_HEADER_BYTES = 100 * 2**20


class FileIdentityError(ValueError):
    """The file's header could not be read, so it has no identity to key a cache on."""


def safetensors_header(path: str | os.PathLike) -> bytes:
    """The raw JSON header of a safetensors file (without its 8-byte length prefix)."""
    path = Path(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise FileIdentityError(f"{path.name} is shorter than a safetensors header")
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_HEADER_BYTES, path.stat().st_size - 8):
            raise FileIdentityError(f"{path.name} claims a {length}-byte header: not a safetensors file")
        return handle.read(length)


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size", "mtime_ns", "header_sha256"}`` of a safetensors file (its name is not part of it)."""
    path = Path(path)
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "header_sha256": hashlib.sha256(safetensors_header(path)).hexdigest()}


def prompt_key(text: str, encoder: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the prompt, the encoder identity and the output-changing options."""
    return payload_key({"version": KEY_VERSION, "text": text, "encoder": dict(encoder), "options": dict(options)})


def payload_key(payload: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of a JSON-able payload in canonical form (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
