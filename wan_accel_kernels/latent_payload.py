"""The latent that crosses between the two stages of a split denoising run, as one self-checking payload.

A payload is ``MAGIC``, a 4-byte little-endian header length, a JSON header and a body. The header names the shape,
the tensor's own dtype, the transfer format, the seed, the total steps and the split step (the step stage B starts
at), and a sha256 of the header's other fields and the body, so any flipped byte is refused before the latent is
used, and a payload of another run (shape, seed, steps, split) is refused by name.

Formats (bytes per latent value): ``fp32`` (4, lossless for fp32, bf16 and fp16 latents), ``bf16`` (2), ``int8``
(1 + a float32 scale per block of ``INT8_BLOCK`` values: 1.0625) and ``int8-channel`` (1 + a float32 scale per
batch item and channel). int8 rounds to nearest with a symmetric absmax scale (127 levels each side).
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict, dataclass
from typing import Mapping

import torch

MAGIC = b"WANLATNT"
VERSION = 1
INT8_BLOCK = 64
INT8_LEVELS = 127
FORMATS = ("fp32", "bf16", "int8", "int8-channel")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_LENGTH = struct.Struct("<I")


class PayloadError(ValueError):
    """A payload that cannot be made or used: corrupt, of another run, or of an unknown format; the message says
    which field and the fix."""


@dataclass(frozen=True)
class RunKey:
    """What ties a payload to one split run: stage B refuses a payload whose key differs from its own."""

    shape: tuple[int, ...]
    seed: int
    steps: int
    split_step: int


@dataclass(frozen=True)
class PayloadHeader:
    """The decoded header of a payload."""

    version: int
    format: str
    dtype: str
    shape: tuple[int, ...]
    seed: int
    steps: int
    split_step: int
    block: int
    sha256: str

    @property
    def key(self) -> RunKey:
        """The run this payload belongs to."""
        return RunKey(self.shape, self.seed, self.steps, self.split_step)


def _dtype_name(dtype: torch.dtype) -> str:
    for name, known in _DTYPES.items():
        if known == dtype:
            return name
    raise PayloadError(f"latent dtype {dtype} cannot be exported; the payload holds float32, float16 or bfloat16")


def _bytes(tensor: torch.Tensor) -> bytes:
    """The raw little-endian bytes of a tensor (any dtype)."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _tensor(body: bytes, dtype: torch.dtype, count: int, offset: int) -> torch.Tensor:
    """``count`` values of ``dtype`` at ``offset`` of ``body`` (a copy, writable)."""
    return torch.frombuffer(bytearray(body), dtype=dtype, count=count, offset=offset).clone()


def _int8_blocks(flat: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per row) of ``flat`` viewed as rows of ``block`` values (zero-padded)."""
    rows = math.ceil(flat.numel() / block)
    padded = torch.zeros(rows * block, dtype=torch.float32)
    padded[:flat.numel()] = flat.float()
    grid = padded.reshape(rows, block)
    scale = grid.abs().amax(dim=1) / INT8_LEVELS
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.round(grid / safe[:, None]).clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8)
    return values.reshape(-1)[:flat.numel()], scale


def _encode_body(latent: torch.Tensor, fmt: str) -> tuple[bytes, int]:
    """(body, block size; 0 where the format has no blocks) of ``latent`` in ``fmt``."""
    if fmt == "fp32":
        return _bytes(latent.float()), 0
    if fmt == "bf16":
        return _bytes(latent.to(torch.bfloat16)), 0
    if fmt == "int8":
        values, scale = _int8_blocks(latent.reshape(-1), INT8_BLOCK)
        return _bytes(scale) + _bytes(values), INT8_BLOCK
    if fmt == "int8-channel":
        per_channel = math.prod(latent.shape[2:])   # one scale per batch item and channel
        values, scale = _int8_blocks(latent.reshape(-1), per_channel)
        return _bytes(scale) + _bytes(values), per_channel
    raise PayloadError(f"transfer format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")


def _decode_body(header: PayloadHeader, body: bytes) -> torch.Tensor:
    """The latent (float32) a checked body holds."""
    count = math.prod(header.shape)
    if header.format == "fp32":
        return _tensor(body, torch.float32, count, 0).reshape(header.shape)
    if header.format == "bf16":
        return _tensor(body, torch.bfloat16, count, 0).float().reshape(header.shape)
    rows = math.ceil(count / header.block)
    scale = _tensor(body, torch.float32, rows, 0)
    values = torch.zeros(rows * header.block, dtype=torch.float32)
    values[:count] = _tensor(body, torch.int8, count, 4 * rows).float()
    return (values.reshape(rows, header.block) * scale[:, None]).reshape(-1)[:count].reshape(header.shape)


def _digest(fields: Mapping[str, object], body: bytes) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + body).hexdigest()


def encode_payload(latent: torch.Tensor, fmt: str, seed: int, steps: int, split_step: int) -> bytes:
    """The payload of ``latent`` (stage A's output at ``split_step`` of ``steps``) in transfer format ``fmt``."""
    if fmt not in FORMATS:
        raise PayloadError(f"transfer format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    dtype = _dtype_name(latent.dtype)
    if latent.dim() < 2 or latent.numel() == 0:
        raise PayloadError(f"latent of shape {list(latent.shape)} cannot be exported; a latent is [batch, channels, "
                           f"...] with at least one value")
    if not bool(torch.isfinite(latent).all()):
        raise PayloadError(f"the latent at step {split_step} of {steps} holds NaN or infinite values; the sampler "
                           f"diverged before the split (check the model files and the cfg), nothing to transfer")
    body, block = _encode_body(latent.detach().cpu(), fmt)
    fields = {"version": VERSION, "format": fmt, "dtype": dtype, "shape": list(latent.shape), "seed": int(seed),
              "steps": int(steps), "split_step": int(split_step), "block": block}
    header = json.dumps({**fields, "sha256": _digest(fields, body)}, sort_keys=True).encode()
    return MAGIC + _LENGTH.pack(len(header)) + header + body


def _expected_body_bytes(header: PayloadHeader) -> int:
    count = math.prod(header.shape)
    if header.format in ("fp32", "bf16"):
        return count * (4 if header.format == "fp32" else 2)
    return 4 * math.ceil(count / header.block) + count


def read_header(payload: bytes, source: str = "payload") -> tuple[PayloadHeader, bytes]:
    """(header, body) of a payload whose checksum holds; a ``PayloadError`` naming ``source`` otherwise."""
    if payload[:len(MAGIC)] != MAGIC or len(payload) < len(MAGIC) + _LENGTH.size:
        raise PayloadError(f"{source} is not a wan-accel latent payload (it does not start with {MAGIC!r}); give "
                           f"the file stage A's Export Latent wrote")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(payload, len(MAGIC))
    try:
        fields = json.loads(payload[start:start + length].decode())
        header = PayloadHeader(**{**fields, "shape": tuple(fields["shape"])})
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError):
        raise PayloadError(f"{source}: its header is unreadable (corrupted in transfer); export it again from "
                           f"stage A") from None
    body = payload[start + length:]
    claimed = {k: v for k, v in fields.items() if k != "sha256"}
    if _digest(claimed, body) != header.sha256:
        raise PayloadError(f"{source}: checksum mismatch (sha256 of header and body differs from the one stage A "
                           f"wrote; {len(body)} body bytes): the payload was corrupted or cut short in transfer; "
                           f"export and upload it again")
    if header.version != VERSION or header.format not in FORMATS or header.dtype not in _DTYPES \
            or len(body) != _expected_body_bytes(header):
        raise PayloadError(f"{source}: version {header.version}, format {header.format!r} or dtype {header.dtype} "
                           f"is not one this pack reads (version {VERSION}, {', '.join(FORMATS)}); update the pack "
                           f"on both servers")
    return header, body


def check_key(header: PayloadHeader, expected: RunKey, source: str = "payload") -> None:
    """Refuses a payload of another run, naming every field that differs and the fix."""
    names = {"shape": "latent shape", "seed": "seed", "steps": "total steps", "split_step": "split step"}
    found, wanted = asdict(header.key), asdict(expected)
    differs = [f"{names[k]} {list(found[k]) if k == 'shape' else found[k]} (this run: "
               f"{list(wanted[k]) if k == 'shape' else wanted[k]})" for k in names if found[k] != wanted[k]]
    if differs:
        raise PayloadError(f"{source} belongs to another run: {'; '.join(differs)}; export it from stage A with "
                           f"the same image size, length, seed, steps and split step as stage B")


def decode_payload(payload: bytes, expected: RunKey | None = None, source: str = "payload") -> torch.Tensor:
    """The latent a payload carries, in its original dtype; refused when corrupt or (with ``expected``) of
    another run."""
    header, body = read_header(payload, source)
    if expected is not None:
        check_key(header, expected, source)
    return _decode_body(header, body).to(_DTYPES[header.dtype])
