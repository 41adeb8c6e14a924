"""Where a Wan 2.2 A14B run hands over from the high-noise to the low-noise expert, from the schedule's sigmas.

Wan 2.2 runs the high-noise expert while the timestep ``t`` (``sigma * 1000`` for its flow-matching schedule) is at
or above ``boundary * 1000``, and the low-noise expert below it (``boundary`` 0.900 for I2V, 0.875 for T2V). In
sigma terms: step ``i`` of ``sigmas[0] > ... > sigmas[n]`` belongs to the high-noise expert when ``sigmas[i] >=
boundary``, so the switch step is the number of leading sigmas at or above the boundary.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WAN22_I2V_BOUNDARY = 0.900
WAN22_T2V_BOUNDARY = 0.875
HIGH_NOISE = "high_noise"
LOW_NOISE = "low_noise"
EXPERTS = (HIGH_NOISE, LOW_NOISE)


def switch_step_at_boundary(sigmas: Sequence[float], boundary: float) -> int:
    """How many steps of the schedule ``sigmas`` (n + 1 descending values) the high-noise expert runs: the steps
    whose starting sigma is at or above ``boundary``; 0 to n."""
    values = [float(s) for s in sigmas]
    if len(values) < 2:
        raise ValueError(f"a schedule needs at least two sigmas (one step), got {len(values)}")
    if not math.isfinite(boundary) or not 0.0 <= boundary <= 1.0:
        raise ValueError(f"boundary {boundary} is not a sigma in [0, 1] (Wan 2.2 I2V uses {WAN22_I2V_BOUNDARY})")
    steps = len(values) - 1
    return next((i for i in range(steps) if values[i] < boundary), steps)


@dataclass(frozen=True)
class SwitchPlan:
    """One two-expert run: its sigmas, and the step where the low-noise expert takes over (0..steps)."""

    sigmas: tuple[float, ...]
    switch_step: int

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def expert_steps(self) -> dict[str, int]:
        """Steps each expert runs."""
        return {HIGH_NOISE: self.switch_step, LOW_NOISE: self.steps - self.switch_step}

    def describe(self) -> str:
        """One line: the sigmas with the switch marked, e.g. ``1.000 0.938 | 0.833 0.625 0.000``."""
        shown = [f"{s:.3f}" for s in self.sigmas]
        shown.insert(self.switch_step, "|")
        counts = self.expert_steps()
        return (f"sigmas {' '.join(shown)}; high-noise expert steps 0-{self.switch_step - 1}, "
                f"low-noise expert steps {self.switch_step}-{self.steps - 1}"
                if 0 < self.switch_step < self.steps else
                f"sigmas {' '.join(shown)}; only the {'high' if counts[HIGH_NOISE] else 'low'}-noise expert runs")


def plan_switch(sigmas: Sequence[float], boundary: float | None = None, step: int | None = None) -> SwitchPlan:
    """The plan for ``sigmas``, switching at ``boundary`` (a sigma) or at ``step`` (exactly one of them)."""
    if (boundary is None) == (step is None):
        raise ValueError("give exactly one of boundary and step")
    values = tuple(float(s) for s in sigmas)
    if step is None:
        return SwitchPlan(values, switch_step_at_boundary(values, boundary))
    if not 0 <= step <= len(values) - 1:
        raise ValueError(f"switch step {step} is outside 0..{len(values) - 1} (the run has {len(values) - 1} steps)")
    return SwitchPlan(values, step)
