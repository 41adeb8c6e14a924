"""Exact cache keys and entries for the image-side encoders (the I2V conditioning-clip VAE encode, CLIP vision).

The entries live in the prompt cache's store (``wan_accel_kernels.prompt_cache.PromptCacheStore``: size limit, oldest-first
eviction, atomic writes, unreadable entries deleted and recomputed). This module adds what is specific to images:
digests of pixel and weight tensors (dtype, shape and every byte, so a changed image misses), keys that combine
them with the encoder's identity and the options that change the output, and a name -> tensor-or-None record
stored bit-exact. Never imports ``comfy``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .prompt_cache import CorruptEntry, payload_key

KEY_VERSION = 2
"""Bumped whenever the stored layout or what an entry means changes, so old entries stop matching."""
FIELDS_KEY = "wan_accel_encoder_fields"


def _update(digest: Any, tensor: torch.Tensor) -> None:
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    if data.numel():
        digest.update(memoryview(data.view(torch.uint8).numpy()))


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha256()
    _update(digest, tensor)
    return digest.hexdigest()


def weights_digest(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """BLAKE2b of every named tensor (name, dtype, shape, bytes): the identity of a model's weights, whatever loaded
    them. BLAKE2b because it hashes the 254 MB Wan VAE about twice as fast as SHA-256 on a CPU without SHA units."""
    digest = hashlib.blake2b(digest_size=32)
    for name, tensor in named_tensors:
        digest.update(name.encode())
        _update(digest, tensor)
    return digest.hexdigest()


def encoder_key(kind: str, inputs: Mapping[str, Any], encoder: Mapping[str, Any]) -> str:
    """SHA-256 hex key of one encode: what is encoded (``kind``), its inputs (digests, sizes, options) and the
    encoder's identity (file or weights, dtype, device, versions); all values JSON-able."""
    return payload_key({"version": KEY_VERSION, "kind": kind, "inputs": dict(inputs), "encoder": dict(encoder)})


Field = Any
"""A field of an encoder output: a tensor, None, a ``torch.Size`` list (the host's ``image_sizes``) or JSON data."""

_SIZES = "sizes"
_JSON = "json"


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v) for k, v in value.items())


def _describe(name: str, value: Field) -> Any:
    """The metadata layout entry of one field: True (tensor), False (None) or a tagged non-tensor value."""
    if isinstance(value, torch.Tensor):
        return True
    if value is None:
        return False
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, torch.Size) for item in value):
        return {_SIZES: [list(item) for item in value]}
    if _plain(value) and not isinstance(value, torch.Size):
        return {_JSON: value}
    raise TypeError(f"encoder cache field {name!r} is a {type(value).__name__}; fields must be tensors, None, "
                    "lists of torch.Size or JSON data")


def pack_fields(fields: Mapping[str, Field]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` for the store: tensors stored bit-exact, every other field in the metadata, so
    :func:`unpack_fields` gives back the same names, values and types."""
    layout = {name: _describe(name, value) for name, value in fields.items()}
    tensors = {name: value for name, value in fields.items() if isinstance(value, torch.Tensor)}
    return tensors, {FIELDS_KEY: json.dumps(layout)}


def _restore(name: str, entry: Any, tensors: Mapping[str, torch.Tensor], device: torch.device | str) -> Field:
    if entry is True:
        return tensors[name].to(device)
    if entry is False:
        return None
    if _SIZES in entry:
        return [torch.Size(size) for size in entry[_SIZES]]
    return entry[_JSON]


def unpack_fields(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
                  device: torch.device | str = "cpu") -> dict[str, Field]:
    """The fields :func:`pack_fields` stored, tensors on ``device``; :class:`CorruptEntry` if the entry does not
    match."""
    try:
        layout = json.loads(metadata[FIELDS_KEY])
        fields = {name: _restore(name, entry, tensors, device) for name, entry in layout.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CorruptEntry(f"not an encoder cache entry ({error})") from error
    if not fields:
        raise CorruptEntry("the entry holds no fields")
    return fields
