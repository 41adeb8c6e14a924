"""How stats leave the process: the host's websocket event and the ``GET /wan_accel/stats`` route."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

EVENT = "wan_accel.stats"
ROUTE = "/wan_accel/stats"


def prompt_server():
    """The running host's ``PromptServer``; None where no host server runs (in-process tests, scripts).

    Looked up in ``sys.modules`` rather than imported: importing the host's ``server`` outside ``main.py`` pulls in
    the whole web app, which a node must never do.
    """
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


def send(message: dict[str, Any]) -> bool:
    """Pushes ``message`` to the editor that queued the running prompt; False when no host server runs."""
    server = prompt_server()
    if server is None:
        return False
    server.send_sync(EVENT, message, server.client_id)
    return True


def add_route(latest: Callable[[], dict[str, dict[str, Any]]]) -> bool:
    """Adds ``GET /wan_accel/stats`` (``{"nodes": latest()}``) to the host's routes; False when no host server runs."""
    server = prompt_server()
    if server is None:
        return False
    from aiohttp import web  # the host's web framework, present wherever a host server runs

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response({"nodes": latest()})

    server.routes.get(ROUTE)(get_stats)
    return True
