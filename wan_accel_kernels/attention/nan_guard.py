"""NaN/Inf guard: a fast attention output that is not finite is recomputed on the exact path, and counted.

One min/max reduction of the output (two scalars, nothing of the output's size allocated) and one host sync for its
two-value answer per guarded call: at Wan 14B's 32,760 tokens that is one read of the 335 MB output, small next to
the attention itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class GuardCounts:
    """How many outputs the guard checked, how many it recomputed, and how many stayed non-finite after that."""

    checked: int = 0
    recomputed: int = 0
    still_non_finite: int = 0

    def describe(self) -> str:
        """One line for logs."""
        text = f"NaN guard: {self.recomputed} of {self.checked} outputs recomputed with sdpa"
        if self.still_non_finite:
            text += f", {self.still_non_finite} non-finite on sdpa too (non-finite inputs)"
        return text


def is_finite(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is finite: a NaN propagates into both the min and the max, and an infinity is
    one of them, so two scalars answer for the whole tensor."""
    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def guarded(fast: Callable[[], torch.Tensor], exact: Callable[[], torch.Tensor], counts: GuardCounts) -> torch.Tensor:
    """``fast()``, or ``exact()`` when ``fast()`` has a NaN/Inf; ``counts`` records what happened."""
    out = fast()
    counts.checked += 1
    if is_finite(out):
        return out
    counts.recomputed += 1
    out = exact()
    if not is_finite(out):
        counts.still_non_finite += 1
    return out
