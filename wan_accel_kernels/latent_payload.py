"""What crosses between the two stages of a split denoising run, as one self-checking payload.

Two kinds: a ``latent`` (the leftover-noise latent of a chained KSamplerAdvanced pair) and a ``history`` (every
denoised prediction stage A's sampler got before the split step, with the sigma of each call), which stage B
replays through the same sampler to reach the split with the same solver state, multistep history included.

A payload is ``MAGIC``, a 4-byte little-endian header length, a JSON header and a body. The header names the kind,
the shape of one tensor, the tensors' own dtype, their count and sigmas, the transfer format, the seed, the total
steps and the split step (the step stage B starts at), and a sha256 of the header's other fields and the body, so
any flipped byte is refused before a tensor is used, and a payload of another run (shape, seed, steps, split,
sampling) is refused by name. Each tensor is encoded on its own (its own int8 scales).

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
VERSION = 2
LATENT = "latent"
HISTORY = "history"
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
    sampling: str = ""
    """Sampler, scheduler and cfg of a history ("uni_pc simple cfg 1.0"); empty for a latent."""


@dataclass(frozen=True)
class PayloadHeader:
    """The decoded header of a payload."""

    version: int
    kind: str
    format: str
    dtype: str
    shape: tuple[int, ...]
    count: int
    sigmas: tuple[float, ...]
    seed: int
    steps: int
    split_step: int
    sampling: str
    block: int
    sha256: str

    @property
    def key(self) -> RunKey:
        """The run this payload belongs to."""
        return RunKey(self.shape, self.seed, self.steps, self.split_step, self.sampling)


@dataclass(frozen=True)
class DenoisingHistory:
    """Stage A's denoised predictions before the split, in call order, with the sigma each was made at."""

    outputs: list[torch.Tensor]
    sigmas: tuple[float, ...]


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


def _checked_dtype(tensors: list[torch.Tensor], what: str) -> str:
    """The one dtype name of ``tensors`` (same shape, finite); a ``PayloadError`` naming ``what`` otherwise."""
    first = tensors[0]
    dtype = _dtype_name(first.dtype)
    if first.dim() < 2 or first.numel() == 0:
        raise PayloadError(f"latent of shape {list(first.shape)} cannot be exported; a latent is [batch, channels, "
                           f"...] with at least one value")
    for tensor in tensors:
        if tensor.shape != first.shape or tensor.dtype != first.dtype:
            raise PayloadError(f"{what}: tensors of shapes {list(first.shape)} and {list(tensor.shape)} (or dtypes "
                               f"{first.dtype}, {tensor.dtype}) cannot share one payload")
        if not bool(torch.isfinite(tensor).all()):
            raise PayloadError(f"{what} holds NaN or infinite values; the sampler diverged before the split (check "
                               f"the model files and the cfg), nothing to transfer")
    return dtype


def _encode(kind: str, tensors: list[torch.Tensor], sigmas: list[float], fmt: str, key: RunKey, what: str) -> bytes:
    if fmt not in FORMATS:
        raise PayloadError(f"transfer format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    dtype = _checked_dtype(tensors, what)
    parts = [_encode_body(tensor.detach().cpu(), fmt) for tensor in tensors]
    body = b"".join(part for part, _ in parts)
    fields = {"version": VERSION, "kind": kind, "format": fmt, "dtype": dtype, "shape": list(tensors[0].shape),
              "count": len(tensors), "sigmas": [float(sigma) for sigma in sigmas], "seed": int(key.seed),
              "steps": int(key.steps), "split_step": int(key.split_step), "sampling": key.sampling,
              "block": parts[0][1]}
    header = json.dumps({**fields, "sha256": _digest(fields, body)}, sort_keys=True).encode()
    return MAGIC + _LENGTH.pack(len(header)) + header + body


def encode_payload(latent: torch.Tensor, fmt: str, seed: int, steps: int, split_step: int) -> bytes:
    """The payload of ``latent`` (stage A's output at ``split_step`` of ``steps``) in transfer format ``fmt``."""
    return _encode(LATENT, [latent], [], fmt, RunKey(tuple(latent.shape), seed, steps, split_step),
                   f"the latent at step {split_step} of {steps}")


def encode_history(outputs: list[torch.Tensor], sigmas: list[float], fmt: str, key: RunKey) -> bytes:
    """The payload of stage A's denoised predictions before ``key.split_step`` (one per sampler call, at
    ``sigmas``)."""
    split_step, steps = key.split_step, key.steps
    if not outputs or len(outputs) != len(sigmas):
        raise PayloadError(f"a history needs one sigma per prediction and at least one prediction (got "
                           f"{len(outputs)} predictions, {len(sigmas)} sigmas); stage A made no model call before "
                           f"step {split_step}")
    return _encode(HISTORY, outputs, sigmas, fmt, key, f"the predictions before step {split_step} of {steps}")


def _tensor_bytes(header: PayloadHeader) -> int:
    """Body bytes of one tensor of ``header``'s shape in its format."""
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
        header = PayloadHeader(**{**fields, "shape": tuple(fields["shape"]), "sigmas": tuple(fields["sigmas"])})
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
            or header.kind not in (LATENT, HISTORY) or header.count < 1 \
            or len(body) != header.count * _tensor_bytes(header):
        raise PayloadError(f"{source}: version {header.version}, kind {header.kind!r}, format {header.format!r} or "
                           f"dtype {header.dtype} is not one this pack reads (version {VERSION}, "
                           f"{', '.join(FORMATS)}); update the pack on both servers")
    return header, body


def check_key(header: PayloadHeader, expected: RunKey, source: str = "payload") -> None:
    """Refuses a payload of another run, naming every field that differs and the fix."""
    names = {"shape": "latent shape", "seed": "seed", "steps": "total steps", "split_step": "split step",
             "sampling": "sampling"}
    found, wanted = asdict(header.key), asdict(expected)
    shown = {"shape": list, "sampling": repr}
    differs = [f"{names[k]} {shown.get(k, str)(found[k])} (this run: {shown.get(k, str)(wanted[k])})"
               for k in names if found[k] != wanted[k]]
    if differs:
        raise PayloadError(f"{source} belongs to another run: {'; '.join(differs)}; export it from stage A with "
                           f"the same image size, length, seed, steps, split step, sampler, scheduler and cfg as "
                           f"stage B")


def _tensors(header: PayloadHeader, body: bytes) -> list[torch.Tensor]:
    size = _tensor_bytes(header)
    return [_decode_body(header, body[i * size:(i + 1) * size]).to(_DTYPES[header.dtype])
            for i in range(header.count)]


def _checked(payload: bytes, kind: str, expected: RunKey | None, source: str) -> tuple[PayloadHeader, bytes]:
    header, body = read_header(payload, source)
    if header.kind != kind:
        makers = {LATENT: "Export Latent", HISTORY: "Split Sampler (stage A)"}
        raise PayloadError(f"{source} is a {header.kind} payload (written by {makers[header.kind]}); this node "
                           f"reads a {kind} payload (written by {makers[kind]}): pair the nodes of one kind")
    if expected is not None:
        check_key(header, expected, source)
    return header, body


def decode_payload(payload: bytes, expected: RunKey | None = None, source: str = "payload") -> torch.Tensor:
    """The latent a payload carries, in its original dtype; refused when corrupt or (with ``expected``) of
    another run."""
    return _tensors(*_checked(payload, LATENT, expected, source))[0]


def decode_history(payload: bytes, expected: RunKey | None = None, source: str = "payload") -> DenoisingHistory:
    """The predictions a history payload carries, in their original dtype; refused like :func:`decode_payload`."""
    header, body = _checked(payload, HISTORY, expected, source)
    return DenoisingHistory(_tensors(header, body), header.sigmas)
