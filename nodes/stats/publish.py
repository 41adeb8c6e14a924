"""The one way a node publishes stats: stored for the route, then pushed to the editor.

A node that knows its numbers when it runs calls :func:`report_node_stats` from ``execute``. A model-patch node
whose numbers are only known after sampling captures :func:`current_target` in ``execute`` and reports into the
run's :class:`nodes.run_context.RunContext`, which calls :func:`report_run_stats` once when the run ends.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

from comfy_execution.utils import get_executing_context

from . import transport
from .model import NodeStats, StatsTarget
from .store import StatsStore

log = logging.getLogger("wan_accel")

STORE = StatsStore()
"""The pack's stats since the host started; the route serves it, nothing else reads it."""


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
    return STORE.messages()


def register_routes() -> bool:
    """Adds ``GET /wan_accel/stats`` to the host's routes (the pack's entry point calls it); False without a server."""
    return transport.add_route(latest_stats)


def _publish(target: StatsTarget, stats: NodeStats, merge: bool) -> dict[str, Any]:
    entry, new = STORE.put(target, stats, merge)
    message = entry.message()
    if not new:
        return message
    transport.send(message)
    log.debug("wan-accel: stats of node %s (%s): %s", target.node_id, target.node_type,
              "; ".join(message["lines"] + message["warnings"]))
    return message
