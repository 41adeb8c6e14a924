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
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import requests
import websocket

from .client_files import OutputFile, outputs_of, safe_name, save
from .client_ws import ProgressEvent, follow, status_messages
from .errors import (MalformedReply, MissingModel, MissingModelFile, MissingNodeType, ServerError, ServerUnreachable,
                     UsageError, WanAccelError, node_error_lines, node_label, rejection_error)
from .graph_fill import Overrides, fill
from .workflow_catalog import model_files

DEFAULT_SERVER = "http://127.0.0.1:8188"
UPLOAD_SUBFOLDER = "wan_accel"
WS_POLL_SECONDS = 1.0          # websocket read timeout; between reads the client checks its deadline


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
        stamps = {event: data.get("timestamp") for event, data in status_messages(self.history)}
        start, end = stamps.get("execution_start"), stamps.get("execution_success")
        numbers = isinstance(start, (int, float)) and isinstance(end, (int, float))
        return (end - start) / 1000.0 if numbers else None


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
    inputs = info.get("input") if isinstance(info, Mapping) else None
    found = [group.get(input_name) for group in (inputs.get("required"), inputs.get("optional"))
             if isinstance(group, Mapping)] if isinstance(inputs, Mapping) else []
    return next((spec for spec in found if spec), None)


def normalise_server(server: str) -> str:
    """``host:port`` or a URL -> ``http(s)://host:port`` without a trailing slash; a ``UsageError`` naming the
    address when it is not one (``http://[::1``, a port out of range, another scheme)."""
    server = server.strip().rstrip("/")
    url = server if "://" in server else f"http://{server}"
    try:
        parts = urlsplit(url)
        parts.port  # reading it raises ValueError when the port is not a number in range
    except ValueError as exc:
        raise UsageError(f"server address {server!r} is not a URL ({exc}); write http://HOST:PORT, e.g. "
                         f"{DEFAULT_SERVER} or http://[::1]:8188") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"server address {server!r} is not an http(s) URL with a host; write http://HOST:PORT, "
                         f"e.g. {DEFAULT_SERVER}")
    return url


def _show(value: Any) -> str:
    """A server's reply as one short line for a message."""
    text = json.dumps(value)   # replies are parsed JSON, so they dump back
    return text if len(text) <= 120 else text[:117] + "..."


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
        except requests.exceptions.RequestException as exc:  # a reply cut short, too many redirects ...
            where, reason = f"{method} {self.base_url}{path}", str(exc)[:200]
            raise MalformedReply(where, f"the reply could not be read ({reason})") from None
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

    def _json_object(self, method: str, path: str, **kwargs) -> dict:
        """A reply that must be a JSON object; anything else is a ``MalformedReply``."""
        reply = self._json(method, path, **kwargs)
        if not isinstance(reply, dict):
            raise MalformedReply(f"{method} {self.base_url}{path}", f"it answered {_show(reply)}, not an object")
        return reply

    def system_stats(self) -> dict:
        """``GET /system_stats``: host versions and devices; also the cheapest reachability check."""
        return self._json_object("GET", "/system_stats")

    def object_info(self, class_type: str | None = None) -> dict:
        """``GET /object_info`` (every node type) or ``/object_info/<class>`` (``{}`` when the server lacks it)."""
        path = "/object_info" if class_type is None else f"/object_info/{class_type}"
        return self._json_object("GET", path, timeout=120)

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
            reply = self._json_object("POST", "/upload/image", files={"image": (path.name, handle)},
                                      data={"subfolder": UPLOAD_SUBFOLDER, "type": "input"}, timeout=300)
        name, subfolder = reply.get("name"), reply.get("subfolder") or ""
        if not isinstance(name, str) or not name or not isinstance(subfolder, str):
            raise MalformedReply(f"POST {self.base_url}/upload/image", f"the reply names no file: {_show(reply)}")
        return f"{subfolder}/{name}" if subfolder else name

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
        where = f"POST {self.base_url}/prompt"
        if not isinstance(payload, dict):
            raise MalformedReply(where, f"it answered HTTP {response.status_code} {_show(payload)}, not an object")
        if response.status_code == 400:
            raise rejection_error(payload, graph)
        prompt_id, node_errors = payload.get("prompt_id"), payload.get("node_errors")
        if not isinstance(prompt_id, str) or not prompt_id:
            raise MalformedReply(where, f"the reply has no prompt_id: {_show(payload)}")
        return prompt_id, node_error_lines(node_errors if isinstance(node_errors, dict) else {}, graph)

    def history(self, prompt_id: str) -> dict | None:
        """The history entry of a prompt, None while it is queued or running."""
        entry = self._json_object("GET", f"/history/{prompt_id}").get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            where = f"GET {self.base_url}/history/{prompt_id}"
            raise MalformedReply(where, f"its entry is {_show(entry)}, not an object")
        return entry

    def interrupt(self, prompt_id: str) -> None:
        """Stops ``prompt_id`` if it is running and removes it from the queue if it is waiting."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def download(self, item: OutputFile, dest_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """Saves one output file into ``dest_dir`` (created if missing) under the last component of its name, never
        over an existing file unless ``overwrite`` (see :func:`~wan_accel.client_files.save`)."""
        name = safe_name(item.filename)
        if name is None:
            raise MalformedReply(f"the history of {self.base_url}", f"output file {item.filename!r} is not a file name")
        where = f"GET {self.base_url}/view of {item.filename!r}"
        kept = f"the file is still on the server in {item.server_path}"
        params = {"filename": item.filename, "subfolder": item.subfolder, "type": item.folder_type}
        response = self._request("GET", "/view", params=params, stream=True, timeout=300)
        try:
            Path(dest_dir).mkdir(parents=True, exist_ok=True)
            return save(_complete_body(response, where, kept), Path(dest_dir) / name, overwrite)
        except requests.exceptions.RequestException as exc:
            raise MalformedReply(where, f"the download was cut short ({str(exc)[:200]}); {kept}") from None
        except OSError as exc:
            raise UsageError(f"cannot save {name} in {dest_dir} ({exc.strerror or exc}); {kept}: free space or fix "
                             f"the folder, then fetch it from there") from None
        finally:
            response.close()

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
                started_at, finished_at = follow(self, socket, prompt_id, graph, on_progress, queued_at + timeout,
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
        files, texts = outputs_of(entry, f"GET {self.base_url}/history/{prompt_id}")
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
             progress: Callable[[ProgressEvent], None], timeout: float,
             overwrite: bool = False) -> tuple[Execution, list[Path]]:
    """One job: uploads the image, fills and queues the workflow, follows it, downloads its output files into
    ``out_dir`` (checked by the caller before, see :func:`~wan_accel.client_files.prepare_out_dir`)."""
    if not image.is_file():
        raise UsageError(f"image {image} does not exist")
    graph = fill(template, overrides)
    client.check_model_files(graph)
    graph = fill(graph, Overrides(image=client.upload_image(image)))
    execution = client.execute(graph, progress, timeout)
    return execution, [client.download(item, out_dir, overwrite) for item in execution.files]


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


def _complete_body(response: requests.Response, where: str, kept: str) -> Iterator[bytes]:
    """The body of a streamed reply in chunks; a ``MalformedReply`` when it ends before its Content-Length."""
    received = 0
    for chunk in response.iter_content(chunk_size=1 << 20):
        received += len(chunk)
        yield chunk
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and "Content-Encoding" not in response.headers \
            and received < int(declared):
        raise MalformedReply(where, f"the download was cut short at {received} of {declared} bytes; {kept}")
