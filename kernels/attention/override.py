"""The callable ComfyUI calls as ``transformer_options["optimized_attention_override"]``: dispatch, run, count.

The host calls it as ``override(original_function, q, k, v, heads, mask=None, attn_precision=None,
skip_reshape=False, skip_output_reshape=False, transformer_options=..., ...)`` (``wrap_attn`` in
comfy/ldm/modules/attention.py). Decisions are cached per call signature and each reason is logged once per
override; counts are per sampling run (:meth:`AttentionOverride.begin_run`).

Under ``torch.compile`` the decision is a trace-time constant and the SDPA path is traced into the graph (no graph
break; such calls are not counted); a sage call is a graph break and runs eagerly (``torch.compiler.disable``), and
is counted.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .dispatch import SAGE, SDPA, AttentionCall, Decision, SageInstall, dispatch, layout_of, requested_kernel
from .nan_guard import GuardCounts, guarded
from .sage import sage_attention
from .sdpa import SdpaFunction, from_hnd, sdpa_attention

logger = logging.getLogger("wan_accel")

CapabilityFunction = Callable[[torch.device], Optional[tuple]]


def cuda_capability(device: torch.device) -> Optional[tuple]:
    """(major, minor) compute capability of a CUDA device, None for other devices."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


@dataclass
class RunStats:
    """Attention calls of one sampling run: per route, sage failures, and the NaN guard's counts."""

    routes: Counter = field(default_factory=Counter)
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
    """A sage output in ``tensor_layout`` as the host expects it (see :func:`kernels.attention.sdpa.from_hnd`)."""
    return from_hnd(out if tensor_layout == "HND" else out.transpose(1, 2), skip_output_reshape)


class AttentionOverride:
    """Routes each host attention call to sage or SDPA (see :func:`kernels.attention.dispatch.dispatch`)."""

    def __init__(self, backend: str, sage: SageInstall, nan_guard: bool = True,
                 sdpa: SdpaFunction = F.scaled_dot_product_attention,
                 capability_of: CapabilityFunction = cuda_capability):
        requested_kernel(backend)  # validates the name
        self.backend = backend
        self.sage = sage
        self.nan_guard = nan_guard
        self.sdpa = sdpa
        self.capability_of = capability_of
        self.stats = RunStats()
        self._decisions: dict = {}
        self._logged: set = set()

    def __deepcopy__(self, memo: dict) -> "AttentionOverride":
        """A model clone gets its own override: same settings, fresh counts and caches."""
        return AttentionOverride(self.backend, self.sage, self.nan_guard, self.sdpa, self.capability_of)

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
        """Same contract as the host's attention functions; ``original`` (the host's choice) is not used."""
        layout, head_dim = layout_of(q, k, v, heads, skip_reshape)
        key = (q.device.type, q.device.index, q.dtype, head_dim, mask is not None, layout)
        if self._route(key) == SAGE:
            return self._sage(key, q, k, v, heads, skip_reshape, skip_output_reshape)
        if not torch.compiler.is_compiling():
            self.stats.routes[SDPA] += 1
        return sdpa_attention(q, k, v, heads, mask, skip_reshape, skip_output_reshape, sdpa=self.sdpa)

    @torch.compiler.assume_constant_result
    def _route(self, key: tuple) -> str:
        """The backend for a call signature, decided and logged once; a constant to torch.compile (no graph break)."""
        decision = self._decisions.get(key)
        if decision is None:
            device_type, index, dtype, head_dim, has_mask, layout = key
            device = torch.device(device_type) if index is None else torch.device(device_type, index)
            call = AttentionCall(device_type, self.capability_of(device), dtype, head_dim, has_mask, layout)
            decision = self._decisions[key] = dispatch(self.backend, call, self.sage)
            self._log_once(decision)
        return decision.backend

    @torch.compiler.disable
    def _sage(self, key: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              skip_reshape: bool, skip_output_reshape: bool) -> torch.Tensor:
        decision = self._decisions[key]

        def exact() -> torch.Tensor:
            return sdpa_attention(q, k, v, heads, None, skip_reshape, skip_output_reshape, sdpa=self.sdpa)

        if decision.backend != SAGE:  # the kernel raised on an earlier call (a compiled graph still routes here)
            self.stats.routes[SDPA] += 1
            return exact()
        layout = "HND" if skip_reshape else "NHD"
        if not skip_reshape:
            batch, head_dim = q.shape[0], q.shape[-1] // heads
            q_s, k_s, v_s = (t.view(batch, -1, heads, head_dim) for t in (q, k, v))
        else:
            q_s, k_s, v_s = q, k, v

        def fast() -> torch.Tensor:
            return sage_output_to_host(sage_attention(decision, self.sage.version, q_s, k_s, v_s, layout),
                                       layout, skip_output_reshape)

        try:
            out = guarded(fast, exact, self.stats.guard) if self.nan_guard else fast()
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # an unforeseen kernel failure: this signature goes to SDPA from now on
            self.stats.sage_errors += 1
            self.stats.routes[SDPA] += 1
            self._decisions[key] = Decision(SDPA, f"{decision.label} raised {type(error).__name__}: {error}")
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
