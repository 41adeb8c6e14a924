"""Following a queued prompt over the host's websocket: its messages decoded into progress events, its end, its
error. A message that does not have the host's shape is a ``MalformedReply``, never a raw exception.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import websocket

from .errors import MalformedReply, ServerError, WanAccelError, execution_error, node_label

HISTORY_CHECK_SECONDS = 5.0    # without websocket news for this long, ask /history whether the prompt ended
STATS_EVENT = "wan_accel.stats"  # our nodes' stats message (nodes/stats/): display lines and warnings per node


class ConnectionLost(ServerError):
    """The websocket of a running prompt dropped while the server still answers; the prompt was interrupted there."""


@dataclass(frozen=True)
class ProgressEvent:
    """What the host reported about a running prompt, for a progress display.

    ``kind``: ``warning`` (label = the host's complaint about a node it dropped, or a warning one of our nodes
    reported), ``queued`` (value = prompts ahead), ``started``, ``cached`` (value = nodes reused), ``node`` (a node
    began), ``step`` (value/total of the node's progress bar), ``finished``.
    """

    kind: str
    node_id: str | None = None
    label: str = ""
    value: int = 0
    total: int = 0


class PromptServer(Protocol):
    """What following a prompt needs of the client (:class:`~wan_accel.client.ComfyClient`)."""

    base_url: str

    def history(self, prompt_id: str) -> dict | None: ...

    def interrupt(self, prompt_id: str) -> None: ...

    def system_stats(self) -> dict: ...


def status_messages(entry: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``[event, data]`` pairs of a history entry's status; pairs of another shape are skipped."""
    status = entry.get("status")
    messages = status.get("messages") if isinstance(status, Mapping) else None
    return [(pair[0], pair[1]) for pair in messages if isinstance(pair, list) and len(pair) == 2
            and isinstance(pair[0], str) and isinstance(pair[1], Mapping)] if isinstance(messages, list) else []


def end_of(entry: Mapping[str, Any], graph: Mapping[str, Any]) -> WanAccelError | None:
    """None if a finished history entry succeeded, else its error."""
    status = entry.get("status")
    if not isinstance(status, Mapping) or status.get("status_str") != "error":
        return None
    for event, data in status_messages(entry):
        if event in ("execution_error", "execution_interrupted"):
            return execution_error(data, graph)
    return ServerError("the prompt failed without an error message in its history")


def decode(raw: str, where: str) -> tuple[Any, dict]:
    """A text frame -> (its ``type``, its ``data`` object); anything else is a ``MalformedReply``."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise MalformedReply(where, f"a message is not JSON: {raw[:120]!r}") from None
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(data if data is not None else {}, dict):
        raise MalformedReply(where, f"a message is not an object with a data object: {raw[:120]!r}")
    return message.get("type"), data or {}


def count(data: Mapping[str, Any], key: str, kind: str, where: str) -> int:
    """An integer field of a message (a whole float is taken too); anything else is a ``MalformedReply``."""
    value = data.get(key, 0)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedReply(where, f"a {kind} message has {key} = {value!r:.60}, not a whole number")
    return value


def follow(client: PromptServer, socket: websocket.WebSocket, prompt_id: str, graph: Mapping[str, Any],
           on_progress: Callable[[ProgressEvent], None], deadline: float,
           node_warnings: list[str]) -> tuple[float, float]:
    """Reads websocket messages until ``prompt_id`` ends; returns the monotonic times it started and ended (the
    start is the queueing time if its message was missed), raises its error. Warnings our nodes send go to
    ``node_warnings`` (and on to ``on_progress``)."""
    where = f"the websocket of {client.base_url}"
    last_news = started_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now > deadline:
            client.interrupt(prompt_id)
            raise WanAccelError(f"prompt {prompt_id} did not finish within the timeout; interrupted it")
        try:
            raw = socket.recv()
        except websocket.WebSocketTimeoutException:
            if now - last_news > HISTORY_CHECK_SECONDS:
                last_news = now
                entry = client.history(prompt_id)
                if entry is not None:
                    error = end_of(entry, graph)
                    if error is not None:
                        raise error from None
                    return started_at, time.monotonic()
            continue
        except (websocket.WebSocketConnectionClosedException, OSError):
            client.system_stats()   # raises ServerUnreachable when the server itself is gone
            try:
                client.interrupt(prompt_id)
            except WanAccelError:
                pass
            raise ConnectionLost(f"ComfyUI at {client.base_url} closed the websocket while prompt {prompt_id} was "
                                 f"running (interrupted it there); its log says why") from None
        except (websocket.WebSocketException, UnicodeDecodeError) as exc:  # a frame that breaks the protocol
            raise MalformedReply(where, f"a frame could not be read ({exc})") from None
        if not isinstance(raw, str):
            continue  # binary frames: latent previews and progress texts
        last_news = time.monotonic()
        kind, data = decode(raw, where)
        if kind == STATS_EVENT and data.get("prompt_id") in (prompt_id, None):
            node_id = str(data.get("node_id"))
            warnings = data.get("warnings") or []
            if not isinstance(warnings, list):
                raise MalformedReply(where, f"a {STATS_EVENT} message has warnings = {warnings!r:.60}, not a list")
            for warning in warnings:
                line = f"node #{node_id} {node_label(graph, node_id, str(data.get('node_type', '?')))}: {warning}"
                node_warnings.append(line)
                on_progress(ProgressEvent("warning", node_id, line))
            continue
        if kind == "status":
            status = data.get("status")
            exec_info = status.get("exec_info") if isinstance(status, dict) else None
            remaining = count(exec_info if isinstance(exec_info, dict) else {}, "queue_remaining", kind, where)
            on_progress(ProgressEvent("queued", value=max(0, remaining - 1)))
            continue
        if data.get("prompt_id") != prompt_id:
            continue
        if kind == "execution_start":
            started_at = time.monotonic()
            on_progress(ProgressEvent("started"))
        elif kind == "execution_cached":
            nodes = data.get("nodes") or []
            if not isinstance(nodes, list):
                raise MalformedReply(where, f"an execution_cached message has nodes = {nodes!r:.60}, not a list")
            on_progress(ProgressEvent("cached", value=len(nodes)))
        elif kind == "executing" and data.get("node") is not None:
            node_id = str(data.get("display_node") or data["node"])
            on_progress(ProgressEvent("node", node_id, node_label(graph, node_id)))
        elif kind == "progress":
            node_id = str(data.get("node"))
            on_progress(ProgressEvent("step", node_id, node_label(graph, node_id), count(data, "value", kind, where),
                                      count(data, "max", kind, where)))
        elif kind == "execution_success":
            on_progress(ProgressEvent("finished"))
            return started_at, time.monotonic()
        elif kind in ("execution_error", "execution_interrupted"):
            raise execution_error(data, graph)
