"""Run-time choice of the GGUF dequantisation path: Triton kernels on CUDA when they can run, else PyTorch.

Both paths give bit-identical results (see :mod:`wan_accel_kernels.gguf.triton_dequantize`), so the choice only changes
speed. ``WAN_ACCEL_GGUF_DEQUANT`` overrides it: ``auto`` (default), ``torch`` (always the PyTorch path) or
``triton`` (Triton wherever the type has a kernel, also on CPU tensors under ``TRITON_INTERPRET=1``; an error
when Triton cannot run). ``auto`` never sends CUDA tensors to Triton's interpreter. Every eager choice goes to the
owner's :class:`~wan_accel_kernels.gguf.path_record.DequantRecord` (see :func:`~wan_accel_kernels.gguf.path_record.recording`) and each
distinct reason is logged once. Either path runs as the operator of :mod:`wan_accel_kernels.gguf.custom_op`; under
``torch.compile`` the path is chosen once per traced call site, at trace time, so the graph has no break.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Sequence

import torch

from .custom_op import gguf_dequantize, triton_kernels
from .dequantize import dequantize
from .path_record import COMPILED, active_record
from .qtypes import QType, qtype_name

ENV_VAR = "WAN_ACCEL_GGUF_DEQUANT"
AUTO, TORCH, TRITON = "auto", "torch", "triton"
CHOICES = (AUTO, TORCH, TRITON)
FLOAT_QTYPES = frozenset({0, 1, 30})  # F32, F16, BF16: decoded by a cast (or a view), never by the operator

log = logging.getLogger("wan_accel")

_logged: set = set()
_triton_kernels = triton_kernels


class TritonFailures:
    """Triton kernel failures seen by one owner (a loaded model, a run), per (device, GGUF type, dtype).

    After a failure that owner's later calls of the same key take the torch path; another owner tries Triton
    again, so one failure does not switch Triton off for the rest of the process.
    """

    def __init__(self) -> None:
        self.reasons: dict[tuple[str, int, torch.dtype], str] = {}

    def reason(self, device: torch.device, qtype: QType, dtype: torch.dtype) -> str | None:
        """Why Triton failed for this key, or None when it has not."""
        return self.reasons.get((str(device), int(qtype), dtype))

    def record(self, device: torch.device, qtype: QType, dtype: torch.dtype, reason: str) -> None:
        """Remembers that Triton failed for this key, and why."""
        self.reasons[str(device), int(qtype), dtype] = reason

    def describe(self) -> str | None:
        """The first failure as one line, or None when there was none."""
        return next(iter(self.reasons.values()), None)


UNOWNED = TritonFailures()
"""Failures of calls that pass no ``failures`` (benchmarks, scripts); a model loader passes its own."""


def triton_problem(failures: TritonFailures | None = None) -> str | None:
    """Why the Triton kernels cannot run (they do not import, or one failed for ``failures``' owner), or None."""
    kernels = _triton_kernels()
    if isinstance(kernels, str):
        return kernels
    return (UNOWNED if failures is None else failures).describe()


def requested_path() -> str:
    """The path ``WAN_ACCEL_GGUF_DEQUANT`` asks for (``auto`` when unset)."""
    requested = os.environ.get(ENV_VAR, AUTO).strip().lower() or AUTO
    if requested not in CHOICES:
        raise ValueError(f"{ENV_VAR}={requested!r} is not one of {', '.join(CHOICES)}; unset it or pick one.")
    return requested


def choose_path(data: torch.Tensor, qtype: QType, dtype: torch.dtype,
                failures: TritonFailures | None = None) -> tuple[str, str]:
    """(path, reason): ``"triton"`` or ``"torch"`` for dequantising ``data`` of ``qtype`` to ``dtype``, and why."""
    return choose_path_on(data.device, qtype, dtype, failures)


def choose_path_on(device: torch.device, qtype: QType, dtype: torch.dtype,
                   failures: TritonFailures | None = None) -> tuple[str, str]:
    """:func:`choose_path` for data on ``device``."""
    requested = requested_path()
    if requested == TORCH:
        return TORCH, f"{ENV_VAR}=torch"
    on_cuda = device.type == "cuda"
    if not on_cuda and requested == AUTO:
        return TORCH, f"data on {device.type}; the Triton kernels run on CUDA"
    failed = (UNOWNED if failures is None else failures).reason(device, qtype, dtype)
    if failed is not None:
        if requested == TRITON:
            raise RuntimeError(f"{ENV_VAR}=triton but {failed}; unset {ENV_VAR} to use the PyTorch path.")
        return TORCH, failed
    kernels = _triton_kernels()
    if isinstance(kernels, str):
        if requested == TRITON:
            raise RuntimeError(f"{ENV_VAR}=triton but {kernels}; install triton (pip install triton) or unset "
                               f"{ENV_VAR}.")
        return TORCH, f"{kernels}; install triton for faster GGUF dequantisation"
    if not on_cuda and not kernels.interpreting():
        raise RuntimeError(f"{ENV_VAR}=triton with data on {device.type}: Triton runs on CUDA tensors, or "
                           "on CPU only under TRITON_INTERPRET=1; move the data to CUDA or unset the variable.")
    if on_cuda and kernels.interpreting():
        if requested == TRITON:
            raise RuntimeError(f"{ENV_VAR}=triton with CUDA data under TRITON_INTERPRET=1: Triton's CPU "
                               "interpreter takes minutes per forward; unset TRITON_INTERPRET (before the first "
                               "import of triton) to run the compiled kernels.")
        return TORCH, ("TRITON_INTERPRET=1 is set: Triton's CPU interpreter would take minutes per forward; unset "
                       "it for the compiled Triton kernels")
    if int(qtype) not in {int(t) for t in kernels.TRITON_DEQUANTIZE_TYPES}:
        return TORCH, f"no Triton kernel for {qtype_name(qtype)}"
    if dtype not in kernels.TRITON_OUTPUT_DTYPES:
        return TORCH, f"no Triton kernel writes {dtype}"
    return TRITON, "Triton kernels" + (" (interpreter)" if kernels.interpreting() else f" on {device}")


@torch.compiler.assume_constant_result
def traced_use_triton(device: torch.device, qtype: int, dtype: torch.dtype) -> bool:
    """Whether a call traced by ``torch.compile`` runs the Triton kernel: :func:`choose_path_on`, evaluated by the
    tracer once per call site (outside the graph), so the environment is read at trace time and never guarded on.
    A kernel that fails there fails the compilation: compiled code has no per-call fallback."""
    path, reason = choose_path_on(device, qtype, dtype)
    record = active_record()
    if record is not None:
        record.record(COMPILED, qtype_name(qtype), path, reason, _target(dtype, device))
    _log_once(path, reason, qtype, warn=device.type == "cuda" and path == TORCH and triton_problem() is not None)
    return path == TRITON


def dequantize_on_device(
    data: torch.Tensor, qtype: QType, shape: Sequence[int], dtype: torch.dtype = torch.float32,
    failures: TritonFailures | None = None, layer: str = "tensor",
) -> torch.Tensor:
    """Decode raw ggml bytes to a ``shape`` tensor of ``dtype`` on ``data.device``, by the path :func:`choose_path`
    picks; same contract and errors as :func:`wan_accel_kernels.gguf.dequantize`. A Triton kernel that fails to compile or
    launch (``auto`` only) falls back to torch with a warning, and ``failures`` (the caller's, e.g. one per model;
    :data:`UNOWNED` when None) keeps that key on torch. The call, labelled ``layer`` (the layer type), goes to the
    active :class:`~wan_accel_kernels.gguf.path_record.DequantRecord`. Under ``torch.compile`` this traces to one operator
    call."""
    if int(qtype) in FLOAT_QTYPES:  # a cast or a view of the data, which an operator may not return
        return dequantize(data, qtype, shape, dtype)
    shape = [int(size) for size in shape]
    if torch.compiler.is_compiling():
        return gguf_dequantize(data, int(qtype), shape, dtype, traced_use_triton(data.device, int(qtype), dtype))
    path, reason = choose_path(data, qtype, dtype, failures)
    record = active_record()
    if path == TRITON:
        try:
            with torch.cuda.device(data.device) if data.is_cuda else contextlib.nullcontext():
                values = gguf_dequantize(data, int(qtype), shape, dtype, True)  # on the data's GPU
        except (ValueError, torch.OutOfMemoryError):  # the caller's arguments, or memory: torch would fail too
            raise
        except Exception as error:  # a kernel that does not compile or launch on this GPU or driver
            if requested_path() == TRITON:
                raise
            reason = f"the Triton kernel failed ({type(error).__name__}: {error}); falling back to PyTorch"
            (UNOWNED if failures is None else failures).record(data.device, qtype, dtype, reason)
            if record is not None:
                record.record_fallback(layer, qtype_name(qtype), reason)
            path = TORCH
        else:
            _record(record, layer, path, reason, qtype, dtype, data.device, warn=False)
            return values
    _record(record, layer, path, reason, qtype, dtype, data.device,
            warn=data.device.type == "cuda" and triton_problem(failures) is not None)
    return gguf_dequantize(data, int(qtype), shape, dtype, False)


def _target(dtype: torch.dtype, device: torch.device) -> tuple[str, str]:
    return str(dtype).removeprefix("torch."), device.type


def _record(record, layer: str, path: str, reason: str, qtype: QType, dtype: torch.dtype, device: torch.device,
            warn: bool) -> None:
    """Adds an eager call to ``record`` (when one is open) and logs its reason the first time it is seen."""
    if record is not None:
        record.record(layer, qtype_name(qtype), path, reason, _target(dtype, device))
    _log_once(path, reason, qtype, warn)


def _log_once(path: str, reason: str, qtype: QType, warn: bool) -> None:
    """Logs ``reason`` the first time it is seen; ``warn`` when a CUDA device runs the slower torch path because
    Triton is missing or failed."""
    if reason in _logged:
        return
    _logged.add(reason)
    log.log(logging.WARNING if warn else logging.INFO, "wan-accel: GGUF %s dequantisation uses %s: %s",
            qtype_name(qtype), path, reason)
