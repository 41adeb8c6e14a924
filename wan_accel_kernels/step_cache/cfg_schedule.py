"""Per-step cfg schedules written as text, e.g. ``"3.0:2,1.0"`` = cfg 3.0 for the first 2 steps, then 1.0."""
from __future__ import annotations

import math
from dataclasses import dataclass

FORMAT_HELP = ("comma-separated 'cfg:steps' entries, the last one may omit ':steps' and lasts to the end, "
               "e.g. '3.0:2,1.0' (3.0 for 2 steps, then 1.0) or '5:1,2.5:2,1'")


@dataclass(frozen=True)
class CfgSchedule:
    """Ordered (cfg, steps) segments; the last segment's cfg continues until the run ends."""

    segments: tuple[tuple[float, int | None], ...]

    def cfg_at(self, step: int) -> float:
        """cfg of 0-based ``step``."""
        start = 0
        for cfg, steps in self.segments:
            if steps is None or step < start + steps:
                return cfg
            start += steps
        return self.segments[-1][0]

    def per_step(self, total_steps: int) -> list[float]:
        """cfg of every step of a ``total_steps`` run."""
        return [self.cfg_at(i) for i in range(total_steps)]

    def guided_steps(self, total_steps: int) -> int:
        """Steps whose cfg is not 1: the host runs the unconditional pass only on those."""
        return sum(not math.isclose(cfg, 1.0) for cfg in self.per_step(total_steps))

    def describe(self, total_steps: int | None = None) -> str:
        """Human-readable form, e.g. "cfg 3.0 for steps 1-2, then 1.0"."""
        parts, start = [], 0
        for cfg, steps in self.segments:
            if steps is None:
                parts.append(f"{cfg:g} from step {start + 1}" if start else f"{cfg:g} throughout")
                break
            parts.append(f"{cfg:g} for step {start + 1}" if steps == 1 else
                         f"{cfg:g} for steps {start + 1}-{start + steps}")
            start += steps
        else:
            parts.append(f"{self.segments[-1][0]:g} after that")
        text = "cfg " + ", then ".join(parts)
        if total_steps is not None:
            text += f"; unconditional pass on {self.guided_steps(total_steps)} of {total_steps} steps"
        return text


def parse_cfg_schedule(text: str) -> CfgSchedule:
    """Parses ``text`` (see ``FORMAT_HELP``); the error says which entry is wrong and what is expected."""
    entries = [e.strip() for e in text.split(",")]
    if not text.strip() or any(not e for e in entries):
        raise ValueError(f"empty cfg schedule entry in {text!r}: expected {FORMAT_HELP}")
    segments: list[tuple[float, int | None]] = []
    for n, entry in enumerate(entries):
        value, sep, count = entry.partition(":")
        try:
            cfg = float(value)
            steps = int(count) if sep else None
        except ValueError:
            raise ValueError(f"cannot read cfg schedule entry {entry!r}: expected {FORMAT_HELP}") from None
        if not math.isfinite(cfg) or cfg < 0:
            raise ValueError(f"cfg must be a finite number >= 0, got {value!r} in {text!r}")
        if steps is None and n != len(entries) - 1:
            raise ValueError(f"only the last entry may omit ':steps'; {entry!r} in {text!r} needs one")
        if steps is not None and steps < 1:
            raise ValueError(f"step counts must be >= 1, got {entry!r} in {text!r}")
        segments.append((cfg, steps))
    return CfgSchedule(tuple(segments))
