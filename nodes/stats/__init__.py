"""Live acceleration stats of our nodes: sent to the editor over the host's websocket, kept for ``GET /wan_accel/stats``.

The pack's one stats channel. :mod:`.model` says what a report holds and how it reads, :mod:`.store` keeps the
latest per node, :mod:`.transport` pushes and serves them, and :mod:`.publish` is the one entry point nodes call.
Each message carries the node's id in the editor's graph, its type, the structured numbers and the display lines
the web extension shows.
"""
from .model import NodeStats, StatsTarget, expert_label, format_bytes, format_seconds, seconds_per_step
from .publish import current_target, latest_stats, register_routes, report_node_stats, report_run_stats
from .store import MAX_ENTRIES

__all__ = ["NodeStats", "StatsTarget", "expert_label", "format_bytes", "format_seconds", "seconds_per_step",
           "current_target", "latest_stats", "register_routes", "report_node_stats", "report_run_stats",
           "MAX_ENTRIES"]
