"""Client of the ComfyUI host's HTTP and websocket API: upload, queue, follow progress, fetch history, download.

Endpoints used: ``GET /system_stats``, ``GET /object_info[/<class>]``, ``POST /upload/image``, ``POST /prompt``,
``GET /ws?clientId=``, ``GET /history/<id>``, ``GET /view``, ``POST /interrupt``, ``POST /queue``. Every failure
becomes a :class:`~wan_accel.errors.WanAccelError` whose message says what to do.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import requests
import websocket

from .errors import (MissingModel, MissingModelFile, MissingNodeType, ServerError, ServerUnreachable, UsageError,
                     WanAccelError, execution_error, node_error_lines, node_label, rejection_error)
from .graph_fill import Overrides, fill
from .workflow_catalog import model_files

DEFAULT_SERVER = "http://127.0.0.1:8188"
UPLOAD_SUBFOLDER = "wan_accel"
WS_POLL_SECONDS = 1.0          # websocket read timeout; between reads the client checks its deadline
HISTORY_CHECK_SECONDS = 5.0    # without websocket news for this long, ask /history whether the prompt ended
STATS_EVENT = "wan_accel.stats"  # our nodes' stats message (nodes/stats.py): display lines and warnings per node


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


@dataclass(frozen=True)
class OutputFile:
    """A file a node reported in its UI output."""

    node_id: str
    filename: str
    subfolder: str
    folder_type: str


@dataclass
class Execution:
    """A finished prompt: its history entry, files and texts per node, and when it was queued, started and ended
    (monotonic seconds of this process, taken as the host's messages arrived)."""

    prompt_id: str
    history: dict
    queued_at: float
    started_at: float
    finished_at: float
    files: list[OutputFile] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Generation time: from the host starting this prompt to its end (model loads included, queue excluded)."""
        return self.finished_at - self.started_at

    @property
    def queue_seconds(self) -> float:
        """Time the prompt waited behind other prompts before the host started it."""
        return self.started_at - self.queued_at

    def host_seconds(self) -> float | None:
        """Execution time the host itself stamped (execution_start to execution_success), if it reported both."""
        stamps = {event: data.get("timestamp") for event, data in self.history.get("status", {}).get("messages", [])}
        start, end = stamps.get("execution_start"), stamps.get("execution_success")
        return (end - start) / 1000.0 if start is not None and end is not None else None


DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
"""ComfyUI 0.33's combo whose options each bring their own inputs (``SaveVideo``'s ``codec``)."""


def combo_options(spec: Any) -> list | None:
    """The options of a combo input spec of /object_info (``[[...], {...}]``, ``["COMBO", {"options": [...]}]``, or
    a dynamic combo's option keys)."""
    if isinstance(spec, list) and spec:
        if isinstance(spec[0], list):
            return spec[0]
        options = (spec[1] if len(spec) > 1 else {}).get("options", [])
        if spec[0] == "COMBO":
            return list(options)
        if spec[0] == DYNAMIC_COMBO:
            return [option["key"] for option in options]
    return None


def input_spec(info: Mapping[str, Any], input_name: str) -> Any:
    """The /object_info spec of one input of a node type (required or optional), None if it has no such input."""
    inputs = info.get("input", {})
    return inputs.get("required", {}).get(input_name) or inputs.get("optional", {}).get(input_name)


def normalise_server(server: str) -> str:
    """``host:port`` or a URL -> ``http(s)://host:port`` without a trailing slash."""
    server = server.strip().rstrip("/")
    return server if "://" in server else f"http://{server}"


def outputs_of(history: Mapping[str, Any]) -> tuple[list[OutputFile], dict[str, list[str]]]:
    """Files (``output`` type only; ``temp`` previews are skipped) and text outputs, per node, of a history entry."""
    files, texts = [], {}
    for node_id in sorted(history.get("outputs", {}), key=lambda k: (len(k), k)):
        for key, items in history["outputs"][node_id].items():
            if key == "text":
                texts[node_id] = [str(item) for item in items]
                continue
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    files.append(OutputFile(node_id, item["filename"], item.get("subfolder", ""), "output"))
    return files, texts


class ComfyClient:
    """One client id talking to one ComfyUI server."""

    def __init__(self, server: str = DEFAULT_SERVER, timeout: float = 30.0):
        self.base_url = normalise_server(server)
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self.session = requests.Session()
        self.prompt_in_flight: str | None = None   # set while execute follows a prompt, for interrupting it

    # ---------------------------------------------------------------- HTTP
    def _request(self, method: str, path: str, *, ok_codes: tuple[int, ...] = (200,), **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.base_url + path, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            raise ServerUnreachable(self.base_url, _connection_reason(exc)) from None
        except requests.exceptions.Timeout:
            raise ServerUnreachable(self.base_url, f"no answer to {method} {path} within {kwargs['timeout']:g} s")
        if response.status_code not in ok_codes:
            raise ServerError(f"{method} {self.base_url}{path} answered HTTP {response.status_code}: "
                              f"{response.text.strip()[:300]}")
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"{method} {self.base_url}{path} did not answer JSON; is this a ComfyUI server?") from None

    def system_stats(self) -> dict:
        """``GET /system_stats``: host versions and devices; also the cheapest reachability check."""
        return self._json("GET", "/system_stats")

    def object_info(self, class_type: str | None = None) -> dict:
        """``GET /object_info`` (every node type) or ``/object_info/<class>`` (``{}`` when the server lacks it)."""
        return self._json("GET", "/object_info" if class_type is None else f"/object_info/{class_type}", timeout=120)

    def check_model_files(self, graph: Mapping[str, Any], object_info: Mapping[str, Any] | None = None) -> None:
        """Raises ``MissingModel`` (every file, its folder, the node) before queueing if the server lacks a model
        file the graph names: the host does not check the file lists of V3 nodes until they run. ``object_info``:
        the server's full ``/object_info`` if already fetched (else each loader's entry is asked for)."""
        missing = []
        for ref in model_files(graph):
            info = (object_info.get(ref.class_type) if object_info is not None
                    else self.object_info(ref.class_type).get(ref.class_type))
            if info is None:
                raise MissingNodeType(ref.class_type, ref.node_id)
            if ref.file not in (combo_options(input_spec(info, ref.input_name)) or []):
                missing.append(MissingModelFile(ref.file, ref.folder, ref.node_id,
                                                node_label(graph, ref.node_id), ref.input_name))
        if missing:
            raise MissingModel(missing)

    def upload_image(self, path: str | os.PathLike) -> str:
        """Uploads an image into the server's ``input/wan_accel/``; returns the name ``LoadImage`` takes."""
        path = Path(path)
        with path.open("rb") as handle:
            reply = self._json("POST", "/upload/image", files={"image": (path.name, handle)},
                               data={"subfolder": UPLOAD_SUBFOLDER, "type": "input"}, timeout=300)
        return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]

    def queue(self, graph: Mapping[str, Any]) -> tuple[str, list[str]]:
        """``POST /prompt``: (prompt id, the host's complaints about outputs it dropped but still queued the rest);
        a rejection raises its error."""
        response = self._request("POST", "/prompt", ok_codes=(200, 400),
                                 json={"prompt": graph, "client_id": self.client_id})
        try:
            payload = response.json()
        except ValueError:
            raise ServerError(f"POST /prompt answered HTTP {response.status_code} without JSON: "
                              f"{response.text.strip()[:300]}") from None
        if response.status_code == 400:
            raise rejection_error(payload, graph)
        return payload["prompt_id"], node_error_lines(payload.get("node_errors") or {}, graph)

    def history(self, prompt_id: str) -> dict | None:
        """The history entry of a prompt, None while it is queued or running."""
        return self._json("GET", f"/history/{prompt_id}").get(prompt_id)

    def interrupt(self, prompt_id: str) -> None:
        """Stops ``prompt_id`` if it is running and removes it from the queue if it is waiting."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def download(self, item: OutputFile, dest_dir: str | os.PathLike) -> Path:
        """Saves one output file into ``dest_dir`` under its own name (written to ``.part``, then renamed)."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / item.filename
        partial = dest.with_name(dest.name + ".part")
        params = {"filename": item.filename, "subfolder": item.subfolder, "type": item.folder_type}
        response = self._request("GET", "/view", params=params, stream=True, timeout=300)
        with partial.open("wb") as handle:
            for chunk in response.iter_content(chunk_size=1 << 20):
                handle.write(chunk)
        os.replace(partial, dest)
        return dest

    # ---------------------------------------------------------------- websocket
    def _ws_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={self.client_id}"

    def execute(self, graph: Mapping[str, Any], on_progress: Callable[[ProgressEvent], None] = lambda e: None,
                timeout: float = 3600.0) -> Execution:
        """Queues ``graph`` and follows it to the end over the websocket; Ctrl-C interrupts it on the server too.
        A failure carries the warnings our nodes reported before it (e.g. tensors missing from a file)."""
        try:
            socket = websocket.create_connection(self._ws_url(), timeout=self.timeout)
        except (OSError, websocket.WebSocketException) as exc:
            raise ServerUnreachable(self.base_url, f"websocket: {exc}") from None
        node_warnings: list[str] = []
        try:
            socket.settimeout(WS_POLL_SECONDS)
            queued_at = time.monotonic()
            prompt_id, warnings = self.queue(graph)
            self.prompt_in_flight = prompt_id
            for warning in warnings:
                on_progress(ProgressEvent("warning", label=warning))
            try:
                started_at, finished_at = _follow(self, socket, prompt_id, graph, on_progress, queued_at + timeout,
                                                  node_warnings)
            except KeyboardInterrupt:
                self.interrupt(prompt_id)
                raise
            except WanAccelError as exc:
                raise with_warnings(exc, node_warnings) from None
        finally:
            self.prompt_in_flight = None
            socket.close()
        entry = self._wait_history(prompt_id)
        files, texts = outputs_of(entry)
        return Execution(prompt_id, entry, queued_at, started_at, finished_at, files, texts)

    def _wait_history(self, prompt_id: str, seconds: float = 30.0) -> dict:
        """The history entry, which the host stores just after it reports the end of the prompt."""
        deadline = time.monotonic() + seconds
        while (entry := self.history(prompt_id)) is None:
            if time.monotonic() > deadline:
                raise ServerError(f"prompt {prompt_id} ended but /history has no entry for it after {seconds:g} s")
            time.sleep(0.1)
        return entry


def generate(client: ComfyClient, template: Mapping[str, Any], overrides: Overrides, image: Path, out_dir: Path,
             progress: Callable[[ProgressEvent], None], timeout: float) -> tuple[Execution, list[Path]]:
    """One job: uploads the image, fills and queues the workflow, follows it, downloads its output files."""
    if not image.is_file():
        raise UsageError(f"image {image} does not exist")
    graph = fill(template, overrides)
    client.check_model_files(graph)
    graph = fill(graph, Overrides(image=client.upload_image(image)))
    execution = client.execute(graph, progress, timeout)
    return execution, [client.download(item, out_dir) for item in execution.files]


def with_warnings(error: WanAccelError, warnings: Sequence[str]) -> WanAccelError:
    """``error`` with the node warnings the server sent before it appended to its message (same type and code)."""
    if warnings:
        error.args = (f"{error}\n  warnings the server reported before the failure:"
                      + "".join(f"\n    {line}" for line in warnings),)
    return error


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset by peer", "Name or service not known", "No route to host",
                   "timed out", "Remote end closed connection"):
        if marker in text:
            return marker.lower()
    return text[:200]


def _end_of(entry: Mapping[str, Any], graph: Mapping[str, Any]) -> WanAccelError | None:
    """None if a finished history entry succeeded, else its error."""
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return None
    for event, data in status.get("messages", []):
        if event in ("execution_error", "execution_interrupted"):
            return execution_error(data, graph)
    return ServerError("the prompt failed without an error message in its history")


def _follow(client: ComfyClient, socket: websocket.WebSocket, prompt_id: str, graph: Mapping[str, Any],
            on_progress: Callable[[ProgressEvent], None], deadline: float,
            node_warnings: list[str]) -> tuple[float, float]:
    """Reads websocket messages until ``prompt_id`` ends; returns the monotonic times it started and ended (the
    start is the queueing time if its message was missed), raises its error. Warnings our nodes send go to
    ``node_warnings`` (and on to ``on_progress``)."""
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
                    error = _end_of(entry, graph)
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
        if not isinstance(raw, str):
            continue  # binary frames: latent previews and progress texts
        last_news = time.monotonic()
        message = json.loads(raw)
        kind, data = message.get("type"), message.get("data") or {}
        if kind == STATS_EVENT and data.get("prompt_id") in (prompt_id, None):
            node_id = str(data.get("node_id"))
            for warning in data.get("warnings") or []:
                line = f"node #{node_id} {node_label(graph, node_id, str(data.get('node_type', '?')))}: {warning}"
                node_warnings.append(line)
                on_progress(ProgressEvent("warning", node_id, line))
            continue
        if kind == "status":
            remaining = (data.get("status") or {}).get("exec_info", {}).get("queue_remaining", 0)
            on_progress(ProgressEvent("queued", value=max(0, int(remaining) - 1)))
            continue
        if data.get("prompt_id") != prompt_id:
            continue
        if kind == "execution_start":
            started_at = time.monotonic()
            on_progress(ProgressEvent("started"))
        elif kind == "execution_cached":
            on_progress(ProgressEvent("cached", value=len(data.get("nodes") or [])))
        elif kind == "executing" and data.get("node") is not None:
            node_id = str(data.get("display_node") or data["node"])
            on_progress(ProgressEvent("node", node_id, node_label(graph, node_id)))
        elif kind == "progress":
            node_id = str(data.get("node"))
            on_progress(ProgressEvent("step", node_id, node_label(graph, node_id), int(data.get("value", 0)),
                                      int(data.get("max", 0))))
        elif kind == "execution_success":
            on_progress(ProgressEvent("finished"))
            return started_at, time.monotonic()
        elif kind in ("execution_error", "execution_interrupted"):
            raise execution_error(data, graph)
