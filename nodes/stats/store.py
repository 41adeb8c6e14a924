"""The latest stats message per editor node, bounded and thread-safe: what ``GET /wan_accel/stats`` serves."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from .model import NodeStats, StatsTarget

MAX_ENTRIES = 512
"""Latest entries kept in memory (one per node id); the oldest go first."""


@dataclass(frozen=True)
class StatsEntry:
    """One node's latest stats and when they were sent."""

    target: StatsTarget
    stats: NodeStats
    sent_at: float

    def message(self) -> dict[str, Any]:
        """The message the editor receives (websocket event and route entry alike)."""
        return {"node_id": self.target.node_id, "node_type": self.target.node_type,
                "prompt_id": self.target.prompt_id, "time": self.sent_at, "stats": self.stats.as_json(),
                "lines": self.stats.lines(), "warnings": self.stats.all_warnings()}


class StatsStore:
    """Keeps the latest :class:`StatsEntry` per node id, at most ``max_entries`` of them."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: dict[str, StatsEntry] = {}
        self._lock = threading.Lock()

    def put(self, target: StatsTarget, stats: NodeStats, merge: bool) -> tuple[StatsEntry, bool]:
        """Stores ``stats`` for ``target`` (merged onto the node's entry of the same type when ``merge``); returns
        the node's entry and whether it is new (False: merging changed nothing the node shows, the old one stays)."""
        with self._lock:
            earlier = self._entries.get(target.node_id)
            if merge and earlier is not None and earlier.target.node_type == target.node_type:
                stats = stats.merged_onto(earlier.stats)
                if stats == earlier.stats:
                    return earlier, False
            self._entries.pop(target.node_id, None)
            entry = StatsEntry(target, stats, time.time())
            self._entries[target.node_id] = entry
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]
        return entry, True

    def messages(self) -> dict[str, dict[str, Any]]:
        """The latest message per node id."""
        with self._lock:
            return {node_id: entry.message() for node_id, entry in self._entries.items()}
