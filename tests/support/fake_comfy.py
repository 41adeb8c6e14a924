"""A scripted fake ComfyUI on 127.0.0.1 for the client's unit tests: HTTP plus a minimal RFC 6455 websocket.

``prompt_reply`` answers ``POST /prompt``, ``ws_messages`` follow it on the websocket (a ``str`` is sent as is;
``drop_ws`` then closes the socket abruptly), ``history`` is what ``/history/<id>`` returns afterwards,
``object_info`` what ``/object_info`` (whole or per class) lists, ``upload_reply`` what ``POST /upload/image``
answers, ``view_cut`` the bytes of a ``/view`` body sent before closing (None: all), ``ws_delay`` the seconds the
websocket waits before its messages (a prompt that takes time), ``requests`` every request seen. ``port`` 0 picks a
free one; a given port serves again where a closed fake was (a server that comes back).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUCCESS = [{"type": "execution_start", "data": {"prompt_id": "p1"}},
           {"type": "execution_success", "data": {"prompt_id": "p1"}}]
"""The websocket messages of a prompt that starts and succeeds."""
HISTORY_OK = {
    "outputs": {"15": {"images": [{"filename": "x_00001_.mp4", "subfolder": "wan_accel", "type": "output"}],
                       "animated": [True]},
                "2": {"text": ["Load Wan DiT (GGUF): 3.0 M parameters"]},
                "13": {"images": [{"filename": "mask.png", "subfolder": "", "type": "temp"}]}},
    "status": {"status_str": "success", "completed": True,
               "messages": [["execution_start", {"prompt_id": "p1", "timestamp": 1000}],
                            ["execution_success", {"prompt_id": "p1", "timestamp": 3500}]]},
}


def _ws_frame(text: str) -> bytes:
    payload = text.encode()
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + struct.pack(">H", len(payload)) + payload


class FakeComfy:
    """A scripted host: ``prompt_reply`` answers POST /prompt, ``ws_messages`` follow it on the websocket,
    ``history`` is what /history/<id> returns afterwards."""

    def __init__(self, port: int = 0):
        self.prompt_reply = (200, {"prompt_id": "p1", "number": 1, "node_errors": {}})
        self.ws_messages: list[dict] = []
        self.history = HISTORY_OK
        self.object_info = {
            "WanAccelLoadDiTGGUF": {"input": {"required": {"unet_name": ["COMBO", {"options": ["other.gguf"]}]}}},
            "VAELoader": {"input": {"required": {"vae_name": [["other_vae.safetensors"]]}}}}
        self.requests: list[tuple[str, str, bytes]] = []
        self.drop_ws = False                  # close the websocket abruptly after ws_messages
        self.upload_reply = {"name": "cat.png", "subfolder": "wan_accel", "type": "input"}
        self.view_cut: int | None = None      # /view declares its whole length but sends this many bytes
        self.ws_delay = 0.0                   # seconds before the websocket sends ws_messages
        self.queued = threading.Event()
        self.answered = threading.Event()   # POST /prompt answered, queued or not
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                fake.requests.append(("GET", self.path, b""))
                if url.path == "/ws":
                    return self._websocket()
                if url.path == "/system_stats":
                    return self._reply(200, {"system": {"comfyui_version": "0.3.64"}, "devices": []})
                if url.path.startswith("/history/"):
                    return self._reply(200, {"p1": fake.history} if fake.queued.is_set() else {})
                if url.path == "/object_info":
                    return self._reply(200, fake.object_info)
                if url.path.startswith("/object_info/"):
                    name = url.path.rsplit("/", 1)[1]
                    return self._reply(200, {name: fake.object_info[name]} if name in fake.object_info else {})
                if url.path == "/view":
                    query = parse_qs(url.query, keep_blank_values=True)
                    body = f"video:{query['subfolder'][0]}/{query['filename'][0]}".encode()
                    if fake.view_cut is None:
                        return self._reply(200, body)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:fake.view_cut])
                    self.close_connection = True
                    return None
                return self._reply(404, b"404: Not Found")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(("POST", self.path, body))
                if self.path == "/prompt":
                    code, reply = fake.prompt_reply
                    if code == 200:
                        fake.queued.set()
                    self._reply(code, reply)
                    return fake.answered.set()
                if self.path == "/upload/image":
                    return self._reply(200, fake.upload_reply)
                return self._reply(200, b"")

            def _websocket(self):
                key = self.headers["Sec-WebSocket-Key"]
                accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
                self.wfile.write((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
                self.wfile.write(_ws_frame(json.dumps({"type": "status", "data": {"status": {
                    "exec_info": {"queue_remaining": 0}}, "sid": "x"}})))
                self.wfile.flush()
                if fake.answered.wait(timeout=10) and fake.queued.is_set():
                    time.sleep(fake.ws_delay)
                    for message in fake.ws_messages:
                        self.wfile.write(b"\x82\x03abc")  # a binary preview frame: ignored by the client
                        self.wfile.write(_ws_frame(message if isinstance(message, str) else json.dumps(message)))
                    self.wfile.flush()
                if fake.drop_ws:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                try:
                    self.connection.settimeout(5)
                    self.connection.recv(1024)  # the client's close frame
                except OSError:
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: A small API graph that :func:`fake_for_graph` serves every node type and model file of.
API_GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "WanAccelLoadDiTGGUF", "inputs": {"unet_name": "wan.gguf"}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["4", 0]}},
    "11": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["5", 0], "seed": 0}},
    "15": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "wan_accel/x"}},
}


def fake_for_graph(ws_messages: list, port: int = 0) -> FakeComfy:
    """A started fake that knows :data:`API_GRAPH`'s node types and ``wan.gguf``, answering with ``ws_messages``."""
    server = FakeComfy(port)
    server.object_info.update({name: {"input": {}} for name in ("LoadImage", "CLIPTextEncode", "KSampler",
                                                                 "SaveVideo")})
    server.object_info["WanAccelLoadDiTGGUF"]["input"]["required"]["unet_name"][1]["options"].append("wan.gguf")
    server.ws_messages = list(ws_messages)
    return server


@contextlib.contextmanager
def two_succeeding_fakes() -> Iterator[list[FakeComfy]]:
    """Two started fakes (:func:`fake_for_graph`) whose prompts succeed, closed on exit."""
    servers = [fake_for_graph(SUCCESS), fake_for_graph(SUCCESS)]
    try:
        yield servers
    finally:
        for server in servers:
            server.close()
