"""Where a sampler call sits in its schedule, and which steps a step cache may skip."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

_SIGMA_REL_TOL = 1e-4  # samplers hand back sigmas that went through a float32 round trip


def step_index(sample_sigmas: Sequence[float], sigma: float) -> int:
    """Index ``i`` of the step whose interval ``[sigmas[i], sigmas[i+1])`` holds ``sigma`` (descending schedule).

    An exact match (within float32 round-off) gives its own index; intermediate evaluations of multi-stage
    samplers (Heun, DPM-2) map to the step they belong to. Sigmas above the first one map to 0.
    """
    sigmas = [float(s) for s in sample_sigmas]
    steps = len(sigmas) - 1
    if steps < 1:
        raise ValueError("sample_sigmas needs at least two values (one step)")
    for i in range(steps):
        if math.isclose(sigma, sigmas[i], rel_tol=_SIGMA_REL_TOL, abs_tol=1e-6):
            return i
    for i in range(steps):
        if sigmas[i] > sigma > sigmas[i + 1]:
            return i
    return 0 if sigma > sigmas[0] else steps - 1


@dataclass(frozen=True)
class StepGate:
    """Which steps may be skipped at all: forced first/last steps, a window of the run, a cap on consecutive skips."""

    first_steps: int = 1
    last_steps: int = 1
    start_percent: float = 0.0
    end_percent: float = 1.0
    max_consecutive_skips: int = 3

    def __post_init__(self) -> None:
        if self.first_steps < 0 or self.last_steps < 0 or self.max_consecutive_skips < 0:
            raise ValueError("first_steps, last_steps and max_consecutive_skips must be >= 0")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError("need 0 <= start_percent <= end_percent <= 1")

    def is_forced(self, step: int, total_steps: int) -> bool:
        """True when ``step`` (0-based, of ``total_steps``) must run the model whatever the cache policy says."""
        if step < self.first_steps or step >= total_steps - self.last_steps:
            return True
        fraction = step / total_steps
        return not self.start_percent <= fraction <= self.end_percent

    def allows_skip(self, step: int, total_steps: int, consecutive_skips: int) -> bool:
        """True when ``step`` may reuse the cache after ``consecutive_skips`` skipped steps in a row."""
        return consecutive_skips < self.max_consecutive_skips and not self.is_forced(step, total_steps)


class AccumulatingState(Protocol):
    """A policy's per-stream state: the skips in a row and a drift accumulated since the last computed step."""

    consecutive_skips: int

    def restart(self) -> None:
        """Zeroes the accumulated drift (the cache was just refreshed)."""


class SkipBookkeeping:
    """The ``commit`` of every step-cache policy: a skip extends the run of skips; a computed step refreshes the
    cache, so the state's accumulation restarts."""

    def commit(self, state: AccumulatingState, skipped: bool) -> None:
        """Records whether this step reused the cache."""
        if skipped:
            state.consecutive_skips += 1
        else:
            state.restart()
            state.consecutive_skips = 0
