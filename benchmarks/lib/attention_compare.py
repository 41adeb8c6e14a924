"""Error of an attention backend against the exact path: SDPA on the same q, k, v computed in float32."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from wan_accel_kernels.attention.dispatch import SAGE, AttentionCall, Decision, SageInstall, dispatch, layout_of
from wan_accel_kernels.attention.override import cuda_capability
from wan_accel_kernels.attention.sage import probe_sage, sage_attention


@dataclass(frozen=True)
class Comparison:
    """What ran (``decision``) and its output's error against float32 SDPA."""

    decision: Decision
    cosine: float
    relative_l1: float
    relative_rmse: float
    max_abs_error: float
    finite: bool

    def describe(self) -> str:
        """One line: route, cosine similarity, relative L1 and RMSE."""
        return (f"{self.decision.label}: cosine {self.cosine:.6f}, rel L1 {self.relative_l1:.2e}, "
                f"rel RMSE {self.relative_rmse:.2e}, max |err| {self.max_abs_error:.2e}"
                + ("" if self.finite else ", NON-FINITE output"))


def error_metrics(out: torch.Tensor, reference: torch.Tensor) -> dict:
    """Cosine similarity, relative L1, relative RMSE and max abs error of ``out`` against ``reference`` (float64)."""
    out, reference = out.double().flatten(), reference.double().flatten()
    difference = out - reference
    return {"cosine": float(F.cosine_similarity(out, reference, dim=0)),
            "relative_l1": float(difference.abs().sum() / reference.abs().sum()),
            "relative_rmse": float(difference.norm() / reference.norm()),
            "max_abs_error": float(difference.abs().max()),
            "finite": bool(torch.isfinite(out).all())}


def run_backend(decision: Decision, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                sage: SageInstall) -> torch.Tensor:
    """Attention of [batch, heads, tokens, head_dim] q, k, v on the route ``decision`` names (no guard)."""
    if decision.backend == SAGE:
        return sage_attention(decision, sage.version, q, k, v, "HND")
    return F.scaled_dot_product_attention(q, k, v)


def decide(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sage: SageInstall) -> Decision:
    """What ``backend`` runs for [batch, heads, tokens, head_dim] q, k, v on their device."""
    layout, head_dim = layout_of(q, k, v, q.shape[1], skip_reshape=True)
    call = AttentionCall(q.device.type, cuda_capability(q.device), q.dtype, head_dim, False, layout)
    return dispatch(backend, call, sage)


def compare(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            sage: Optional[SageInstall] = None) -> Comparison:
    """Runs ``backend`` ("auto", "sdpa" or "sageattn_<kernel>", see ``BACKENDS``) on [batch, heads, tokens,
    head_dim] q, k, v and measures it against SDPA of the same tensors in float32."""
    sage = probe_sage() if sage is None else sage
    decision = decide(backend, q, k, v, sage)
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    out = run_backend(decision, q, k, v, sage)
    return Comparison(decision, **error_metrics(out, reference))
