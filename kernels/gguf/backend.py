"""Run-time choice of the GGUF dequantisation path: Triton kernels on CUDA when they can run, else PyTorch.

Both paths give bit-identical results (see :mod:`kernels.gguf.triton_dequantize`), so the choice only changes
speed. ``WAN_ACCEL_GGUF_DEQUANT`` overrides it: ``auto`` (default), ``torch`` (always the PyTorch path) or
``triton`` (Triton wherever the type has a kernel, also on CPU tensors under ``TRITON_INTERPRET=1``; an error
when Triton cannot run). Every choice is counted and each distinct reason is logged once.
"""
from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from types import ModuleType
from typing import Sequence

import torch

from .dequantize import dequantize
from .qtypes import QType, qtype_name

ENV_VAR = "WAN_ACCEL_GGUF_DEQUANT"
AUTO, TORCH, TRITON = "auto", "torch", "triton"
CHOICES = (AUTO, TORCH, TRITON)

log = logging.getLogger("wan_accel")

_counts: Counter = Counter()
_logged: set = set()
_failure: str | None = None  # why a Triton kernel failed in this process; once set, ``auto`` stays on torch


@functools.cache
def _triton_kernels() -> ModuleType | str:
    """The Triton kernel module, or why it does not import (no triton, a broken install); imported once."""
    try:
        from . import triton_dequantize
    except Exception as error:  # a triton wheel built for another torch or driver fails in many ways
        return f"triton does not import ({type(error).__name__}: {error})"
    return triton_dequantize


def triton_problem() -> str | None:
    """Why the Triton kernels cannot run in this process, or None when they can."""
    if _failure is not None:
        return _failure
    kernels = _triton_kernels()
    return kernels if isinstance(kernels, str) else None


def requested_path() -> str:
    """The path ``WAN_ACCEL_GGUF_DEQUANT`` asks for (``auto`` when unset)."""
    requested = os.environ.get(ENV_VAR, AUTO).strip().lower() or AUTO
    if requested not in CHOICES:
        raise ValueError(f"{ENV_VAR}={requested!r} is not one of {', '.join(CHOICES)}; unset it or pick one.")
    return requested


def choose_path(data: torch.Tensor, qtype: QType, dtype: torch.dtype) -> tuple[str, str]:
    """(path, reason): ``"triton"`` or ``"torch"`` for dequantising ``data`` of ``qtype`` to ``dtype``, and why."""
    requested = requested_path()
    if requested == TORCH:
        return TORCH, f"{ENV_VAR}=torch"
    on_cuda = data.device.type == "cuda"
    if not on_cuda and requested == AUTO:
        return TORCH, f"data on {data.device.type}; the Triton kernels run on CUDA"
    if _failure is not None:
        if requested == TRITON:
            raise RuntimeError(f"{ENV_VAR}=triton but {_failure}; unset {ENV_VAR} to use the PyTorch path.")
        return TORCH, _failure
    kernels = _triton_kernels()
    if isinstance(kernels, str):
        if requested == TRITON:
            raise RuntimeError(f"{ENV_VAR}=triton but {kernels}; install triton (pip install triton) or unset "
                               f"{ENV_VAR}.")
        return TORCH, f"{kernels}; install triton for faster GGUF dequantisation"
    if not on_cuda and not kernels.interpreting():
        raise RuntimeError(f"{ENV_VAR}=triton with data on {data.device.type}: Triton runs on CUDA tensors, or "
                           "on CPU only under TRITON_INTERPRET=1; move the data to CUDA or unset the variable.")
    if int(qtype) not in {int(t) for t in kernels.TRITON_DEQUANTIZE_TYPES}:
        return TORCH, f"no Triton kernel for {qtype_name(qtype)}"
    if dtype not in kernels.TRITON_OUTPUT_DTYPES:
        return TORCH, f"no Triton kernel writes {dtype}"
    return TRITON, "Triton kernels" + (" (interpreter)" if kernels.interpreting() else f" on {data.device}")


def dequantize_on_device(
    data: torch.Tensor, qtype: QType, shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Decode raw ggml bytes to a ``shape`` tensor of ``dtype`` on ``data.device``, by the path :func:`choose_path`
    picks; same contract and errors as :func:`kernels.gguf.dequantize`. A Triton kernel that fails to compile or
    launch (``auto`` only) switches this process to the torch path, with a warning."""
    global _failure
    path, reason = choose_path(data, qtype, dtype)
    if path == TRITON:
        try:
            values = _triton_kernels().triton_dequantize(data, qtype, shape, dtype)
        except (ValueError, torch.OutOfMemoryError):  # the caller's arguments, or memory: torch would fail too
            raise
        except Exception as error:  # a kernel that does not compile or launch on this GPU or driver
            if requested_path() == TRITON:
                raise
            _failure = f"the Triton kernel failed ({type(error).__name__}: {error}); falling back to PyTorch"
            path, reason = TORCH, _failure
        else:
            _record(path, reason, qtype, warn=False)
            return values
    _record(path, reason, qtype, warn=data.device.type == "cuda" and triton_problem() is not None)
    return dequantize(data, qtype, shape, dtype)


def _record(path: str, reason: str, qtype: QType, warn: bool) -> None:
    """Counts the call (not while torch.compile traces) and logs its reason the first time it is seen; ``warn``
    when a CUDA device runs the slower torch path because Triton is missing or failed."""
    if torch.compiler.is_compiling():
        return
    _counts[path, qtype_name(qtype)] += 1
    if reason in _logged:
        return
    _logged.add(reason)
    log.log(logging.WARNING if warn else logging.INFO, "wan-accel: GGUF %s dequantisation uses %s: %s",
            qtype_name(qtype), path, reason)


def path_counts() -> dict[tuple[str, str], int]:
    """Calls per (path, GGUF type) since the last :func:`reset_path_counts`, for node text and benchmarks."""
    return dict(_counts)


def path_summary() -> str:
    """One line for node output, e.g. ``GGUF dequant: triton Q6_K x400, torch Q8_0 x2``."""
    if not _counts:
        return "GGUF dequant: no calls yet"
    parts = [f"{path} {name} x{count}" for (path, name), count in sorted(_counts.items())]
    return "GGUF dequant: " + ", ".join(parts)


def reset_path_counts() -> None:
    """Zeroes the counts (start of a sampling run or of a benchmark configuration)."""
    _counts.clear()
