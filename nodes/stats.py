"""Live acceleration stats of our nodes: sent to the editor over the host's websocket, kept for ``GET /wan_accel/stats``.

This is the pack's one stats channel. A node that knows its numbers when it runs calls :func:`report_node_stats`
from ``execute``. A model-patch node whose numbers are only known after sampling captures :func:`current_target`
in ``execute`` and reports into the run's :class:`nodes.run_context.RunContext`, which calls
:func:`report_run_stats` once when the run ends. Each message carries the node's id
in the editor's graph, its type, the structured numbers and the display lines the web extension shows.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from comfy_execution.utils import get_executing_context

EVENT = "wan_accel.stats"
ROUTE = "/wan_accel/stats"
MAX_ENTRIES = 512
"""Latest entries kept in memory (one per node id); the oldest go first."""

log = logging.getLogger("wan_accel")


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


@dataclass(frozen=True)
class _Entry:
    target: StatsTarget
    stats: NodeStats
    sent_at: float

    def message(self) -> dict[str, Any]:
        return {"node_id": self.target.node_id, "node_type": self.target.node_type,
                "prompt_id": self.target.prompt_id, "time": self.sent_at, "stats": self.stats.as_json(),
                "lines": self.stats.lines(), "warnings": self.stats.all_warnings()}


_latest: dict[str, _Entry] = {}
_lock = threading.Lock()


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


def current_target(node_type: str) -> Optional[StatsTarget]:
    """The node the host is executing now, as a report target; None outside a host run. Call it in ``execute``."""
    context = get_executing_context()
    if context is None:
        return None
    return StatsTarget(str(context.node_id), node_type, context.prompt_id)


def report_node_stats(node_type: str, stats: NodeStats) -> Optional[dict[str, Any]]:
    """From ``execute``: replaces the executing node's stats and sends them; returns the message (None: no run)."""
    target = current_target(node_type)
    if target is None:
        log.debug("wan-accel: %s reported stats outside a host run; not sent", node_type)
        return None
    return _publish(target, stats, merge=False)


def report_run_stats(target: Optional[StatsTarget], stats: NodeStats) -> Optional[dict[str, Any]]:
    """At the end of a sampling run (:class:`nodes.run_context.RunContext`): merges onto the node's stats of the
    same type and sends, under the prompt running now (the node itself may have come from the host's cache). A run
    that changes nothing the node showed sends nothing: the node keeps its entry, prompt and time."""
    if target is None:
        return None
    context = get_executing_context()
    if context is not None:
        target = dataclasses.replace(target, prompt_id=context.prompt_id)
    return _publish(target, stats, merge=True)


def latest_stats() -> dict[str, dict[str, Any]]:
    """The latest message per node id, as ``GET /wan_accel/stats`` serves it."""
    with _lock:
        return {node_id: entry.message() for node_id, entry in _latest.items()}


def _publish(target: StatsTarget, stats: NodeStats, merge: bool) -> dict[str, Any]:
    with _lock:
        earlier = _latest.get(target.node_id)
        if merge and earlier is not None and earlier.target.node_type == target.node_type:
            stats = stats.merged_onto(earlier.stats)
            if stats == earlier.stats:
                return earlier.message()
        _latest.pop(target.node_id, None)
        entry = _Entry(target, stats, time.time())
        _latest[target.node_id] = entry
        while len(_latest) > MAX_ENTRIES:
            del _latest[next(iter(_latest))]
    message = entry.message()
    prompt_server = _prompt_server()
    if prompt_server is not None:
        prompt_server.send_sync(EVENT, message, prompt_server.client_id)
    log.debug("wan-accel: stats of node %s (%s): %s", target.node_id, target.node_type,
              "; ".join(message["lines"] + message["warnings"]))
    return message


def _prompt_server():
    """The running host's ``PromptServer``; None where no host server runs (in-process tests, scripts).

    Looked up in ``sys.modules`` rather than imported: importing the host's ``server`` outside ``main.py`` pulls in
    the whole web app, which a node must never do.
    """
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


def register_routes() -> bool:
    """Adds ``GET /wan_accel/stats`` to the host's routes; False when no host server runs."""
    prompt_server = _prompt_server()
    if prompt_server is None:
        return False
    from aiohttp import web  # the host's web framework, present wherever a host server runs

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response({"nodes": latest_stats()})

    prompt_server.routes.get(ROUTE)(get_stats)
    return True


register_routes()
