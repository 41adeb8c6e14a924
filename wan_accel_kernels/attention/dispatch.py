"""Which attention backend a call gets: a pure function of the call's metadata and the installed sageattention.

Sage takes fp16/bf16 CUDA tensors, head_dim <= 128, no mask, in its "HND" or "NHD" layout with a contiguous last
dim; anything else goes to PyTorch SDPA, with the reason spelled out. Q/K stay 8-bit: every kernel here is INT8 Q/K
(INT4 Q/K collapses Wan's quality, SageAttention2++ paper: VQA 53 -> 30).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch

SAGE = "sage"
SDPA = "sdpa"
AUTO = "auto"

FP16_TRITON = "qk_int8_pv_fp16_triton"
FP16_CUDA = "qk_int8_pv_fp16_cuda"
FP8_CUDA = "qk_int8_pv_fp8_cuda"
FP8_CUDA_SM90 = "qk_int8_pv_fp8_cuda_sm90"
SAGE_KERNELS = (FP16_TRITON, FP16_CUDA, FP8_CUDA, FP8_CUDA_SM90)

SAGE_FUNCTION_PREFIX = "sageattn_"
# Names a user picks: "auto", one sageattention function per kernel (as sageattention and KJNodes spell them), "sdpa".
BACKENDS = (AUTO, *(SAGE_FUNCTION_PREFIX + kernel for kernel in SAGE_KERNELS), SDPA)

SAGE_LAYOUTS = ("HND", "NHD")
SAGE_DTYPES = (torch.float16, torch.bfloat16)
MAX_SAGE_HEAD_DIM = 128
SAGE1_HEAD_DIMS = (64, 96, 128)


@dataclass(frozen=True)
class SageInstall:
    """What the installed ``sageattention`` offers: its version (None: not installed) and its usable kernels."""

    version: Optional[str]
    kernels: frozenset = frozenset()
    problem: Optional[str] = None  # why importing it failed, if it did

    def describe(self) -> str:
        """One line for logs and the node's text."""
        if self.version is None:
            return "sageattention not installed"
        if self.problem is not None:
            return f"sageattention {self.version} does not import ({self.problem})"
        return f"sageattention {self.version} ({', '.join(sorted(self.kernels)) or 'no usable kernel'})"


@dataclass(frozen=True)
class AttentionCall:
    """The metadata of one attention call that the backend choice depends on.

    ``layout`` is "HND" ([batch, heads, tokens, head_dim]) or "NHD" ([batch, tokens, heads, head_dim]) when sage can
    take the tensors as they are, otherwise a short description of what it cannot take.
    """

    device_type: str
    capability: Optional[tuple]  # (major, minor) of a CUDA device, None elsewhere
    dtype: torch.dtype
    head_dim: int
    has_mask: bool
    layout: str


@dataclass(frozen=True)
class Decision:
    """The backend one call runs on, the sage kernel and its options if any, and why."""

    backend: str
    reason: str
    kernel: Optional[str] = None
    options: tuple = ()  # (name, value) pairs passed to the sageattention function

    @property
    def label(self) -> str:
        """Short name of the route: "sdpa" or "sage <kernel>"."""
        return SDPA if self.backend == SDPA else f"{SAGE} {self.kernel}"

    def describe(self) -> str:
        """The route with its options and reason, for logs and the node's text."""
        options = "".join(f", {name}={value}" for name, value in self.options)
        return f"{self.label}{options} ({self.reason})"


def version_tuple(version: str) -> tuple:
    """(major, minor, patch) of a version string such as "2.2.0" or "2.1.1+cu128torch2.7"."""
    numbers = [int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))


def sm_name(capability: Optional[tuple]) -> str:
    """"sm89" for (8, 9)."""
    return "no CUDA capability" if capability is None else f"sm{capability[0]}{capability[1]}"


def kernel_runs_on(kernel: str, capability: tuple) -> bool:
    """Whether sageattention builds/ships ``kernel`` for this compute capability."""
    major = capability[0]
    if kernel == FP16_TRITON:
        return major in (8, 9)  # sageattention: the Triton kernel is not usable on sm100/sm120
    if kernel == FP16_CUDA:
        return major >= 8
    if kernel == FP8_CUDA:
        return tuple(capability) == (8, 9) or major == 12
    if kernel == FP8_CUDA_SM90:
        return tuple(capability) == (9, 0)
    raise ValueError(f"unknown sage kernel {kernel!r}; known: {', '.join(SAGE_KERNELS)}")


def auto_preference(capability: tuple) -> tuple:
    """Sage kernels to try for ``auto``, best first: sageattention's own per-arch choice, then portable ones."""
    capability = tuple(capability)
    if capability == (8, 0):
        return (FP16_CUDA, FP16_TRITON)
    if capability == (8, 6):
        return (FP16_TRITON, FP16_CUDA)
    if capability == (8, 9):
        return (FP8_CUDA, FP16_CUDA, FP16_TRITON)
    if capability == (9, 0):
        return (FP8_CUDA_SM90, FP16_CUDA, FP16_TRITON)
    if capability[0] == 12:
        return (FP8_CUDA, FP16_CUDA)
    return (FP16_CUDA, FP16_TRITON)


def build_cuda(version: str) -> Optional[tuple]:
    """(major, minor) of the CUDA toolkit a sageattention wheel was built with, read from the ``+cuXYZ`` local tag
    that prebuilt wheels carry in their version ("2.2.0+cu128torch2.7.1" -> (12, 8)); None when the version has no
    such tag, as a source build's plain "2.2.0" has not."""
    match = re.search(r"cu(\d{3})(?!\d)", version.partition("+")[2])
    return None if match is None else (int(match.group(1)[:2]), int(match.group(1)[2]))


def fp16_pv_accumulation_safe(capability: tuple, version: str) -> bool:
    """Whether sageattention's fp8 kernel may accumulate PV in "fp32+fp16" here.

    sageattention >= 2.2.0 asks for it on sm89 and sm120, but an extension built with CUDA < 12.8 compiles that
    sm89 path as a trap (``__brkpt``) that kills the CUDA context, which no per-call fallback survives. sm120 builds
    need CUDA >= 12.8 anyway (sageattention's setup.py refuses older ones). On sm89 the check reads the build CUDA
    recorded in the wheel's version tag (:func:`build_cuda`); ``torch.version.cuda`` is not evidence, since
    torch's extension builder accepts any nvcc of the same major version. Unknown counts as too old.
    """
    if version_tuple(version) < (2, 2, 0):
        return False
    if tuple(capability) != (8, 9):
        return True
    cuda = build_cuda(version)
    return cuda is not None and cuda >= (12, 8)


def kernel_options(kernel: str, capability: tuple, version: str) -> tuple:
    """Options of the sageattention function for ``kernel``, as sageattention's own ``sageattn`` sets them, except
    that fp16 PV accumulation needs :func:`fp16_pv_accumulation_safe`."""
    if kernel == FP16_CUDA:
        return (("pv_accum_dtype", "fp32"),)
    if kernel == FP8_CUDA:
        accum = "fp32+fp16" if fp16_pv_accumulation_safe(capability, version) else "fp32+fp32"
        granularity = "per_warp" if capability[0] == 12 else "per_thread"
        return (("pv_accum_dtype", accum), ("qk_quant_gran", granularity))
    if kernel == FP8_CUDA_SM90:
        return (("pv_accum_dtype", "fp32+fp32"),)
    return ()


def requested_kernel(backend: str) -> Optional[str]:
    """The sage kernel an explicit backend name asks for; None for "auto" and "sdpa"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend[len(SAGE_FUNCTION_PREFIX):] if backend.startswith(SAGE_FUNCTION_PREFIX) else None


def _sdpa(reason: str) -> Decision:
    return Decision(SDPA, reason)


def dispatch(backend: str, call: AttentionCall, sage: SageInstall) -> Decision:
    """The backend for ``call`` when the user asked for ``backend``: sage only where it is known to be safe."""
    kernel = requested_kernel(backend)
    if backend == SDPA:
        return _sdpa("sdpa requested")
    if call.device_type != "cuda":
        return _sdpa(f"no CUDA: tensors on {call.device_type}")
    if sage.version is None:
        return _sdpa("sageattention not installed (pip install sageattention)")
    if sage.problem is not None:
        return _sdpa(f"sageattention {sage.version} does not import: {sage.problem}")
    if call.dtype not in SAGE_DTYPES:
        return _sdpa(f"{str(call.dtype).replace('torch.', '')} inputs: sage takes float16/bfloat16 only")
    if call.head_dim > MAX_SAGE_HEAD_DIM:
        return _sdpa(f"head_dim {call.head_dim} > {MAX_SAGE_HEAD_DIM}")
    if version_tuple(sage.version) < (2, 0, 0) and call.head_dim not in SAGE1_HEAD_DIMS:
        return _sdpa(f"head_dim {call.head_dim}: sageattention 1.x takes {'/'.join(map(str, SAGE1_HEAD_DIMS))}")
    if call.has_mask:
        return _sdpa("attention mask present: sage kernels do not apply masks")
    if call.layout not in SAGE_LAYOUTS:
        return _sdpa(f"layout not taken by sage: {call.layout}")
    if call.capability is None:
        return _sdpa("CUDA device without a compute capability")
    sm = sm_name(call.capability)
    candidates = auto_preference(call.capability) if kernel is None else (kernel,)
    for candidate in candidates:
        if candidate not in sage.kernels:
            continue
        if not kernel_runs_on(candidate, call.capability):
            continue
        reason = f"{'auto' if kernel is None else 'requested'} on {sm}, sageattention {sage.version}"
        if candidate == FP8_CUDA and version_tuple(sage.version) >= (2, 2, 0) \
                and not fp16_pv_accumulation_safe(call.capability, sage.version):
            cuda = build_cuda(sage.version)
            built = "unknown" if cuda is None else f"{cuda[0]}.{cuda[1]}"
            reason += f"; fp32+fp32 PV: build CUDA {built}, fp32+fp16 needs a build with CUDA >= 12.8"
        return Decision(SAGE, reason, candidate, kernel_options(candidate, call.capability, sage.version))
    if kernel is None:
        return _sdpa(f"no sage kernel for {sm} in sageattention {sage.version}")
    if kernel not in sage.kernels:
        return _sdpa(f"sageattention {sage.version} does not offer {kernel}")
    return _sdpa(f"{kernel} does not run on {sm}")


def layout_of(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, skip_reshape: bool) -> tuple:
    """(layout, head_dim) of a host attention call (ComfyUI conventions: ``skip_reshape`` means
    [batch, heads, tokens, head_dim], otherwise [batch, tokens, heads * head_dim]); see :class:`AttentionCall`."""
    if skip_reshape:
        layout, head_dim = "HND", q.shape[-1]
        shapes_ok = q.ndim == k.ndim == v.ndim == 4 and q.shape[1] == k.shape[1] == v.shape[1]
    else:
        layout, head_dim = "NHD", q.shape[-1] // heads
        shapes_ok = (q.ndim == k.ndim == v.ndim == 3 and q.shape[-1] % heads == 0
                     and k.shape[-1] == v.shape[-1] == q.shape[-1])
    if not shapes_ok:
        layout = "q/k/v heads or widths differ"
    elif not q.dtype == k.dtype == v.dtype:
        layout = "q/k/v dtypes differ"
    elif not q.device == k.device == v.device:
        layout = "q/k/v on different devices"
    elif q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        layout = "last dim not contiguous"
    return layout, int(head_dim)
