"""What a node reports and how it reads: :class:`NodeStats` (numbers, display lines, warnings), the report target,
and the number formats the badges use."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence


@dataclass(frozen=True)
class NodeStats:
    """What one of our nodes did in a run; every field is optional, set those the node knows."""

    attention_backend: Optional[str] = None
    attention_fallbacks: Optional[int] = None
    cache_policy: Optional[str] = None
    steps_computed: Optional[int] = None
    steps_skipped: Optional[int] = None
    expert: Optional[str] = None
    expert_steps: Optional[Mapping[str, Mapping[str, int]]] = None
    dequant_path: Optional[str] = None
    weight_types: Optional[Mapping[str, int]] = None
    resident_bytes: Optional[int] = None
    seconds_per_step: Optional[float] = None
    seconds_per_frame: Optional[float] = None
    text_encoder_cache: Optional[str] = None
    image_encoder_cache: Optional[str] = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def merged_onto(self, earlier: "NodeStats") -> "NodeStats":
        """``earlier`` with every field this one sets replaced (notes and warnings: this one's if it has any)."""
        updates = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if getattr(self, f.name) not in (None, ())}
        return dataclasses.replace(earlier, **updates)

    def lines(self) -> list[str]:
        """The compact display lines, one per concern, in a fixed order."""
        lines = []
        if self.attention_backend is not None:
            line = f"attention: {self.attention_backend}"
            if self.attention_fallbacks is not None:
                line += f" · {self.attention_fallbacks} fallback{'' if self.attention_fallbacks == 1 else 's'}"
            lines.append(line)
        if self.steps_computed is not None or self.steps_skipped is not None:
            where = f" ({expert_label(self.expert)})" if self.expert is not None else ""
            lines.append(f"{self.cache_policy or 'cache'}{where}: {self.steps_computed or 0} computed · "
                         f"{self.steps_skipped or 0} skipped")
        for expert, counts in (self.expert_steps or {}).items():
            lines.append(f"{expert_label(expert)}: {counts.get('computed', 0)} computed · "
                         f"{counts.get('skipped', 0)} skipped of {counts.get('steps', 0)} steps")
        if self.dequant_path is not None:
            lines.append(f"dequant: {self.dequant_path}")
        if self.weight_types is not None or self.resident_bytes is not None:
            parts = [" ".join(f"{name}×{count}" for name, count in sorted((self.weight_types or {}).items()))]
            if self.resident_bytes is not None:
                parts.append(f"{format_bytes(self.resident_bytes)} resident")
            lines.append("weights: " + " · ".join(part for part in parts if part))
        if self.seconds_per_step is not None:
            lines.append(f"time: {format_seconds(self.seconds_per_step)}/step")
        if self.seconds_per_frame is not None:
            lines.append(f"time: {format_seconds(self.seconds_per_frame)}/frame")
        if self.text_encoder_cache is not None:
            lines.append(f"text encoder cache: {self.text_encoder_cache}")
        if self.image_encoder_cache is not None:
            lines.append(f"image encoder cache: {self.image_encoder_cache}")
        return lines + list(self.notes)

    def all_warnings(self) -> list[str]:
        """The node's own warnings plus those every node gets: fallbacks taken, a cache that skipped nothing."""
        warnings = list(self.warnings)
        if self.attention_fallbacks:
            warnings.append(f"{self.attention_fallbacks} attention call"
                            f"{'' if self.attention_fallbacks == 1 else 's'} fell back from "
                            f"{self.attention_backend or 'the fast backend'}")
        if self.steps_computed and self.steps_skipped == 0:
            warnings.append(f"{self.cache_policy or 'cache'} skipped no step of {self.steps_computed}")
        return warnings

    def as_json(self) -> dict[str, Any]:
        """The numbers that are set, as plain JSON (notes and warnings travel as display lines)."""
        data = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and f.name not in ("notes", "warnings"):
                data[f.name] = _plain(value)
        return data


def expert_label(expert: str) -> str:
    """``high_noise`` -> ``high-noise expert``: how a Wan 2.2 expert is named on a badge."""
    return f"{expert.replace('_', '-')} expert"


def _plain(value: Any) -> Any:
    """``value`` with every mapping turned into a plain dict (JSON)."""
    return {key: _plain(item) for key, item in value.items()} if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class StatsTarget:
    """The editor node a report belongs to: its id in the prompt (``"12"``, ``"5:3"`` inside a subgraph) and type."""

    node_id: str
    node_type: str
    prompt_id: Optional[str] = None


def format_bytes(count: int) -> str:
    """``1.5 GiB``, ``12.0 MiB`` or ``512 KiB``: the unit users read memory in."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    if count >= 2**20:
        return f"{count / 2**20:.1f} MiB"
    return f"{count / 2**10:.0f} KiB"


def format_seconds(seconds: float) -> str:
    """``12.3 s`` from one second up, ``850 ms`` below."""
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def seconds_per_step(elapsed: float, sigmas: Sequence[float]) -> Optional[float]:
    """Wall time per sampling step of a run over ``sigmas`` (steps = len - 1); None for an empty schedule."""
    steps = len(sigmas) - 1
    return elapsed / steps if steps > 0 else None
