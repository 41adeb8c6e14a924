"""The callable ComfyUI calls as ``transformer_options["optimized_attention_override"]``: dispatch, run, count.

The host calls it as ``override(original_function, q, k, v, heads, mask=None, attn_precision=None,
skip_reshape=False, skip_output_reshape=False, transformer_options=..., ...)`` (``wrap_attn`` in
comfy/ldm/modules/attention.py; ComfyUI 0.33 adds ``low_precision_attention``, ``scale`` and ``enable_gqa``, and
unwraps its tensor containers before calling an override). Every call that does not go to sage goes to
``original``, the attention the host chose (SDPA, xformers, flash, split, its own sage), with every argument the
host passed, so the user's host backend stays in force and new host arguments reach it. Decisions are cached per
call signature and each reason is logged once per override; counts are per sampling run
(:meth:`AttentionOverride.begin_run`).

Under ``torch.compile`` the decision is a trace-time constant and the host's path is traced into the graph (no graph
break; such calls are not counted); a sage call is a graph break and runs eagerly (``torch.compiler.disable``), and
is counted.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .dispatch import SAGE, SDPA, AttentionCall, Decision, SageInstall, dispatch, layout_of, requested_kernel
from .nan_guard import GuardCounts, guarded
from .sage import sage_attention

logger = logging.getLogger("wan_accel")

CapabilityFunction = Callable[[torch.device], Optional[tuple]]


def cuda_capability(device: torch.device) -> Optional[tuple]:
    """(major, minor) compute capability of a CUDA device, None for other devices."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


@dataclass
class RunStats:
    """Attention calls of one sampling run: per route, why calls of a sage backend went to the host's attention,
    sage failures, and the NaN guard's counts."""

    routes: Counter = field(default_factory=Counter)
    fallback_reasons: Counter = field(default_factory=Counter)
    sage_errors: int = 0
    guard: GuardCounts = field(default_factory=GuardCounts)

    @property
    def calls(self) -> int:
        """Counted calls, all routes together."""
        return sum(self.routes.values())

    def describe(self) -> str:
        """One line for the log at the end of a run."""
        routes = ", ".join(f"{count} {label}" for label, count in sorted(self.routes.items()))
        text = f"{self.calls} attention calls ({routes or 'none counted'})"
        if self.sage_errors:
            text += f"; {self.sage_errors} sage calls raised and were recomputed with sdpa"
        if self.guard.checked:
            text += f"; {self.guard.describe()}"
        return text


def sage_output_to_host(out: torch.Tensor, tensor_layout: str, skip_output_reshape: bool) -> torch.Tensor:
    """A sage output in ``tensor_layout`` as the host expects it: [batch, heads, tokens, head_dim] with
    ``skip_output_reshape``, else [batch, tokens, heads * head_dim]."""
    out = out if tensor_layout == "HND" else out.transpose(1, 2)
    if skip_output_reshape:
        return out
    batch, heads, tokens, head_dim = out.shape
    return out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def host_hint(head_dim: int, kwargs: dict) -> Optional[str]:
    """Why the host's own arguments rule sage out for this call, None if they do not."""
    if kwargs.get("low_precision_attention", True) is False:
        return "the host asked for full precision here (low_precision_attention=False)"
    if kwargs.get("enable_gqa", False):
        return "grouped-query attention (enable_gqa)"
    scale = kwargs.get("scale")
    if scale is not None and abs(scale - head_dim ** -0.5) > 1e-6 * head_dim ** -0.5:
        return f"a softmax scale of {scale:g} (sage uses 1/sqrt(head_dim))"
    return None


class AttentionOverride:
    """Routes each host attention call to sage or SDPA (see :func:`wan_accel_kernels.attention.dispatch.dispatch`)."""

    def __init__(self, backend: str, sage: SageInstall, nan_guard: bool = True,
                 capability_of: CapabilityFunction = cuda_capability):
        requested_kernel(backend)  # validates the name
        self.backend = backend
        self.sage = sage
        self.nan_guard = nan_guard
        self.capability_of = capability_of
        self.stats = RunStats()
        self._decisions: dict = {}
        self._logged: set = set()

    def __deepcopy__(self, memo: dict) -> "AttentionOverride":
        """A model clone gets its own override: same settings, fresh counts and caches."""
        return AttentionOverride(self.backend, self.sage, self.nan_guard, self.capability_of)

    def begin_run(self) -> None:
        """Zeroes the counts: called at the start of every sampling run."""
        self.stats = RunStats()

    def expected_decision(self, device: torch.device, dtype: torch.dtype, head_dim: int) -> Decision:
        """The decision for an unmasked call in the host's usual [batch, tokens, heads * head_dim] layout."""
        call = AttentionCall(device.type, self.capability_of(device), dtype, head_dim, False, "NHD")
        decision = dispatch(self.backend, call, self.sage)
        self._log_once(decision)
        return decision

    def __call__(self, original: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                 mask: Optional[torch.Tensor] = None, attn_precision: Optional[torch.dtype] = None,
                 skip_reshape: bool = False, skip_output_reshape: bool = False, **kwargs) -> torch.Tensor:
        """Same contract as the host's attention functions: sage where it is safe, else ``original`` (the host's
        choice) with every argument the host passed."""
        def host() -> torch.Tensor:
            return original(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                            skip_output_reshape=skip_output_reshape, **kwargs)

        layout, head_dim = layout_of(q, k, v, heads, skip_reshape)
        hint = host_hint(head_dim, kwargs)
        key = (q.device.type, q.device.index, q.dtype, head_dim, mask is not None, layout, hint)
        if self._route(key) == SAGE:
            return self._sage(key, host, q, k, v, heads, skip_reshape, skip_output_reshape)
        if not torch.compiler.is_compiling():
            self._count_host_call(key)
        return host()

    def _count_host_call(self, key: tuple) -> None:
        """Counts a call that went to the host's attention and, for a sage backend, why."""
        self.stats.routes[SDPA] += 1
        if self.backend != SDPA:
            self.stats.fallback_reasons[self._decisions[key].reason] += 1

    @torch.compiler.assume_constant_result
    def _route(self, key: tuple) -> str:
        """The backend for a call signature, decided and logged once; a constant to torch.compile (no graph break)."""
        decision = self._decisions.get(key)
        if decision is None:
            device_type, index, dtype, head_dim, has_mask, layout, hint = key
            if hint is not None:
                decision = Decision(SDPA, hint)
            else:
                device = torch.device(device_type) if index is None else torch.device(device_type, index)
                call = AttentionCall(device_type, self.capability_of(device), dtype, head_dim, has_mask, layout)
                decision = dispatch(self.backend, call, self.sage)
            self._decisions[key] = decision
            self._log_once(decision)
        return decision.backend

    @torch.compiler.disable
    def _sage(self, key: tuple, exact: Callable[[], torch.Tensor], q: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor, heads: int, skip_reshape: bool, skip_output_reshape: bool) -> torch.Tensor:
        decision = self._decisions[key]
        if decision.backend != SAGE:  # the kernel raised on an earlier call (a compiled graph still routes here)
            self._count_host_call(key)
            return exact()
        layout = "HND" if skip_reshape else "NHD"

        def fast() -> torch.Tensor:
            if skip_reshape:
                q_s, k_s, v_s = q, k, v
            else:
                batch, head_dim = q.shape[0], q.shape[-1] // heads
                q_s, k_s, v_s = (t.view(batch, -1, heads, head_dim) for t in (q, k, v))
            return sage_output_to_host(sage_attention(decision, self.sage.version, q_s, k_s, v_s, layout),
                                       layout, skip_output_reshape)

        try:
            out = guarded(fast, exact, self.stats.guard) if self.nan_guard else fast()
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # an unforeseen failure: this signature goes to the host's attention from now on
            self.stats.sage_errors += 1
            self._decisions[key] = Decision(SDPA, f"{decision.label} raised {type(error).__name__}: {error}")
            self._count_host_call(key)
            self._log_once(self._decisions[key])
            return exact()
        self.stats.routes[decision.label] += 1
        return out

    def _log_once(self, decision: Decision) -> None:
        text = decision.describe()
        if text in self._logged:
            return
        self._logged.add(text)
        fell_back = decision.backend == SDPA and self.backend != SDPA
        logger.log(logging.WARNING if fell_back else logging.INFO, "Patch Attention (%s): %s", self.backend, text)
