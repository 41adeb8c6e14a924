"""Per-run statistics of a step cache: which DiT forwards ran and which reused the cache."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepCacheStats:
    """What one sampling run did, forward by forward; ``as_dict`` is the shape a web extension reads."""

    policy: str
    total_steps: int = 0
    decisions: list[tuple[int, bool]] = field(default_factory=list)
    resets: int = 0

    def record(self, step: int, total_steps: int, computed: bool) -> None:
        """Notes one DiT forward at ``step`` of ``total_steps``: computed or served from the cache."""
        self.total_steps = total_steps
        self.decisions.append((step, computed))

    @property
    def forwards_computed(self) -> int:
        return sum(computed for _, computed in self.decisions)

    @property
    def forwards_skipped(self) -> int:
        return len(self.decisions) - self.forwards_computed

    @property
    def steps_computed(self) -> int:
        """Steps where at least one forward ran the model."""
        return len({step for step, computed in self.decisions if computed})

    @property
    def steps_skipped(self) -> int:
        """Steps where every forward reused the cache."""
        return len({step for step, _ in self.decisions}) - self.steps_computed

    def summary(self) -> str:
        """One line for the log and the node's progress text."""
        steps = self.steps_computed + self.steps_skipped
        line = (f"{self.policy}: computed {self.steps_computed}/{steps} steps, skipped {self.steps_skipped} "
                f"(DiT forwards {self.forwards_computed} run, {self.forwards_skipped} reused)")
        if self.resets:
            line += f"; state reset {self.resets}x on a shape/dtype/device change"
        return line

    def as_dict(self) -> dict:
        """Plain-JSON view of the run."""
        return {"policy": self.policy, "total_steps": self.total_steps,
                "steps_computed": self.steps_computed, "steps_skipped": self.steps_skipped,
                "forwards_computed": self.forwards_computed, "forwards_skipped": self.forwards_skipped,
                "resets": self.resets,
                "decisions": [{"step": step, "computed": computed} for step, computed in self.decisions]}
