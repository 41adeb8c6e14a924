"""SageAttention, imported lazily: what the installed package offers, and one kernel call in the host's layouts.

The call is wrapped in ``torch.compiler.disable``: sageattention's kernels (Triton launches, CUDA extensions,
``torch.cuda.set_device``) are not traceable by every version of it, so under ``torch.compile`` a sage call runs
eagerly between two compiled graphs instead of breaking the compilation.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType
from typing import Callable, Optional

import torch

from .dispatch import FP8_CUDA, FP8_CUDA_SM90, FP16_CUDA, FP16_TRITON, SAGE_FUNCTION_PREFIX, SAGE_KERNELS, \
    Decision, SageInstall, version_tuple

# The flag in ``sageattention.core`` that says a kernel's CUDA extension was compiled into the installed wheel.
COMPILED_FLAGS = {FP16_CUDA: "SM80_ENABLED", FP8_CUDA: "SM89_ENABLED", FP8_CUDA_SM90: "SM90_ENABLED"}
DISTRIBUTION = "sageattention"


def installed_version() -> Optional[str]:
    """Version of the installed sageattention distribution, None if it is not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def offered_kernels(module: ModuleType, version: str) -> frozenset:
    """Kernels an imported sageattention ``module`` can run: 1.x has one Triton kernel (``sageattn``); 2.x exports
    one function per kernel, usable when ``sageattention.core`` says its CUDA extension was compiled."""
    if version_tuple(version) < (2, 0, 0):
        return frozenset({FP16_TRITON}) if hasattr(module, "sageattn") else frozenset()
    core = getattr(module, "core", None)
    return frozenset(kernel for kernel in SAGE_KERNELS
                     if hasattr(module, SAGE_FUNCTION_PREFIX + kernel)
                     and getattr(core, COMPILED_FLAGS.get(kernel, ""), True))


def probe_sage() -> SageInstall:
    """Imports sageattention if installed and lists its usable kernels; never raises."""
    version = installed_version()
    if version is None:
        return SageInstall(None)
    try:
        module = importlib.import_module("sageattention")
    except Exception as error:  # a wheel built for another torch/CUDA fails in many ways
        return SageInstall(version, problem=f"{type(error).__name__}: {error}")
    return SageInstall(version, offered_kernels(module, version))


def kernel_function(kernel: str, version: str) -> Callable[..., torch.Tensor]:
    """The sageattention function running ``kernel`` (1.x: ``sageattn``, its only kernel)."""
    module = importlib.import_module("sageattention")
    if version_tuple(version) < (2, 0, 0):
        return module.sageattn
    return getattr(module, SAGE_FUNCTION_PREFIX + kernel)


@torch.compiler.disable
def sage_attention(decision: Decision, version: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   tensor_layout: str) -> torch.Tensor:
    """Runs the sage kernel of ``decision`` on q, k, v in ``tensor_layout`` ("HND" or "NHD"); same layout out.

    sageattention 1.x subtracts the key mean from ``k`` in place; softmax is invariant to that shift, so a
    recomputation from the same tensors still gives the same attention.
    """
    function = kernel_function(decision.kernel, version)
    return function(q, k, v, tensor_layout=tensor_layout, is_causal=False, **dict(decision.options))
