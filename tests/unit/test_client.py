"""The host API client against a scripted fake ComfyUI on 127.0.0.1 (HTTP plus a minimal RFC 6455 websocket):
progress events, outputs, downloads, and every error a user can meet, formatted per node and input, never as raw
JSON."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from wan_accel.cli import ProgressPrinter, main
from wan_accel.client import ComfyClient, ProgressEvent, normalise_server, outputs_of
from wan_accel.errors import (ExecutionFailed, Interrupted, MissingModel, MissingNodeType, PromptInvalid,
                              ServerError, ServerUnreachable)

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
GRAPH = {
    "2": {"class_type": "WanAccelLoadDiTGGUF", "inputs": {"unet_name": "wan.gguf", "compute_dtype": "auto"},
          "_meta": {"title": "Load Wan DiT (GGUF Q6_K)"}},
    "9": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
    "11": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "steps": 0}, "_meta": {"title": "KSampler"}},
    "15": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "wan_accel/x"}, "_meta": {"title": "Save video"}},
}
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

    def __init__(self):
        self.prompt_reply = (200, {"prompt_id": "p1", "number": 1, "node_errors": {}})
        self.ws_messages: list[dict] = []
        self.history = HISTORY_OK
        self.object_info = {
            "WanAccelLoadDiTGGUF": {"input": {"required": {"unet_name": ["COMBO", {"options": ["other.gguf"]}]}}},
            "VAELoader": {"input": {"required": {"vae_name": [["other_vae.safetensors"]]}}}}
        self.requests: list[tuple[str, str, bytes]] = []
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
                if url.path.startswith("/object_info/"):
                    name = url.path.rsplit("/", 1)[1]
                    return self._reply(200, {name: fake.object_info[name]} if name in fake.object_info else {})
                if url.path == "/view":
                    query = parse_qs(url.query)
                    return self._reply(200, f"video:{query['subfolder'][0]}/{query['filename'][0]}".encode())
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
                    return self._reply(200, {"name": "cat.png", "subfolder": "wan_accel", "type": "input"})
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
                    for message in fake.ws_messages:
                        self.wfile.write(b"\x82\x03abc")  # a binary preview frame: ignored by the client
                        self.wfile.write(_ws_frame(json.dumps(message)))
                    self.wfile.flush()
                try:
                    self.connection.settimeout(5)
                    self.connection.recv(1024)  # the client's close frame
                except OSError:
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    server = FakeComfy()
    yield server
    server.close()


def _progress(node: str, value: int, total: int) -> dict:
    return {"type": "progress", "data": {"prompt_id": "p1", "node": node, "value": value, "max": total}}


def test_execute_reports_progress_and_collects_outputs(fake, tmp_path):
    fake.ws_messages = [
        {"type": "execution_start", "data": {"prompt_id": "p1"}},
        {"type": "execution_cached", "data": {"prompt_id": "p1", "nodes": ["9"]}},
        {"type": "executing", "data": {"prompt_id": "other", "node": "5"}},
        {"type": "executing", "data": {"prompt_id": "p1", "node": "2", "display_node": "2"}},
        {"type": "executing", "data": {"prompt_id": "p1", "node": "11", "display_node": "11"}},
        _progress("11", 1, 2), _progress("11", 2, 2),
        {"type": "execution_success", "data": {"prompt_id": "p1"}},
    ]
    events: list[ProgressEvent] = []
    client = ComfyClient(fake.url)
    execution = client.execute(GRAPH, events.append, timeout=30)
    kinds = [(e.kind, e.node_id, e.label, e.value, e.total) for e in events if e.kind != "queued"]
    assert kinds == [("started", None, "", 0, 0), ("cached", None, "", 1, 0),
                     ("node", "2", "Load Wan DiT (GGUF Q6_K)", 0, 0), ("node", "11", "KSampler", 0, 0),
                     ("step", "11", "KSampler", 1, 2), ("step", "11", "KSampler", 2, 2), ("finished", None, "", 0, 0)]
    assert execution.host_seconds() == 2.5
    assert execution.queued_at <= execution.started_at <= execution.finished_at
    assert execution.seconds + execution.queue_seconds == execution.finished_at - execution.queued_at
    assert [(f.node_id, f.filename, f.subfolder) for f in execution.files] == [("15", "x_00001_.mp4", "wan_accel")]
    assert execution.texts == {"2": ["Load Wan DiT (GGUF): 3.0 M parameters"]}
    [saved] = [client.download(f, tmp_path) for f in execution.files]
    assert saved.read_bytes() == b"video:wan_accel/x_00001_.mp4" and not list(tmp_path.glob("*.part"))
    posted = json.loads(next(body for method, path, body in fake.requests if path == "/prompt"))
    assert posted == {"prompt": GRAPH, "client_id": client.client_id}
    assert any(path == f"/ws?clientId={client.client_id}" for _, path, _ in fake.requests)


def test_upload_returns_the_name_load_image_takes(fake, tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG fake")
    assert ComfyClient(fake.url).upload_image(image) == "wan_accel/cat.png"
    [(_, _, body)] = [r for r in fake.requests if r[1] == "/upload/image"]
    assert b'name="subfolder"' in body and b"wan_accel" in body and b"\x89PNG fake" in body


def test_unreachable_server_says_where_and_how_to_fix():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServerUnreachable) as caught:
        ComfyClient(f"127.0.0.1:{port}").system_stats()
    assert str(caught.value).startswith(f"cannot reach ComfyUI at http://127.0.0.1:{port} (connection refused)")
    assert "--server" in str(caught.value) and caught.value.exit_code == 3


def _rejection(fake, error: dict, node_errors: dict) -> Exception:
    fake.prompt_reply = (400, {"error": error, "node_errors": node_errors})
    with pytest.raises(Exception) as caught:
        ComfyClient(fake.url).execute(GRAPH, timeout=10)
    return caught.value


FAILED_VALIDATION = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                     "details": "...", "extra_info": {}}


def test_validation_errors_are_listed_per_node_and_input(fake):
    error = _rejection(fake, FAILED_VALIDATION, {"11": {"class_type": "KSampler", "dependent_outputs": ["15"], "errors": [
        {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "steps",
         "extra_info": {"input_name": "steps", "input_config": ["INT", {"min": 1}], "received_value": 0}},
        {"type": "required_input_missing", "message": "Required input is missing", "details": "positive",
         "extra_info": {"input_name": "positive"}}]}})
    assert isinstance(error, PromptInvalid) and error.exit_code == 5
    assert str(error) == ("ComfyUI rejected the workflow: Prompt outputs failed validation\n"
                          "  node #11 KSampler, input steps: Value 0 smaller than min of 1: steps\n"
                          "  node #11 KSampler, input positive: Required input is missing: positive")


def test_missing_model_files_are_found_before_queueing_with_their_folder(fake):
    client = ComfyClient(fake.url)
    with pytest.raises(MissingModel) as caught:
        client.check_model_files(GRAPH)
    assert caught.value.exit_code == 4
    assert str(caught.value).splitlines()[1:3] == [
        "  wan.gguf: put it in ComfyUI/models/diffusion_models/ (node #2 Load Wan DiT (GGUF Q6_K), input unet_name)",
        "  wan_2.1_vae.safetensors: put it in ComfyUI/models/vae/ (node #9 VAELoader, input vae_name)"]
    fake.object_info["WanAccelLoadDiTGGUF"]["input"]["required"]["unet_name"][1]["options"].append("wan.gguf")
    fake.object_info["VAELoader"]["input"]["required"]["vae_name"][0].append("wan_2.1_vae.safetensors")
    client.check_model_files(GRAPH)
    del fake.object_info["VAELoader"]
    with pytest.raises(MissingNodeType, match="no node type VAELoader \\(node #9\\): install the custom-node pack"):
        client.check_model_files(GRAPH)
    assert not any(path == "/prompt" for _, path, _ in fake.requests)


def test_a_node_type_the_server_lacks_says_which_pack_to_install(fake):
    error = _rejection(fake, {"type": "invalid_prompt", "message": "Cannot execute because node "
                              "WanAccelLoadDiTGGUF does not exist.", "details": "Node ID '#2'", "extra_info": {}}, {})
    assert isinstance(error, MissingNodeType)
    assert "no node type WanAccelLoadDiTGGUF (node #2): install or update wan-accel" in str(error)


def test_execution_error_names_the_node_and_the_exception(fake):
    fake.ws_messages = [{"type": "execution_error", "data": {
        "prompt_id": "p1", "node_id": "2", "node_type": "WanAccelLoadDiTGGUF", "exception_type": "ValueError",
        "exception_message": "broken.gguf is not a GGUF file (nodes/gguf_model.py); convert it again\n",
        "traceback": ["Traceback...\n", '  File "/x/nodes/gguf_model.py", line 40, in load\n', "    raise\n"]}}]
    with pytest.raises(ExecutionFailed) as caught:
        ComfyClient(fake.url).execute(GRAPH, timeout=10)
    assert caught.value.exit_code == 6
    assert str(caught.value) == ("node #2 Load Wan DiT (GGUF Q6_K) failed: ValueError: broken.gguf is not a GGUF "
                                 "file (nodes/gguf_model.py); convert it again\n"
                                 '  where: File "/x/nodes/gguf_model.py", line 40, in load')


def test_interruption_by_another_client_is_reported(fake):
    fake.ws_messages = [{"type": "execution_interrupted", "data": {
        "prompt_id": "p1", "node_id": "11", "node_type": "KSampler", "executed": []}}]
    with pytest.raises(Interrupted, match="interrupted at node #11 KSampler"):
        ComfyClient(fake.url).execute(GRAPH, timeout=10)


def test_http_errors_and_non_json_answers_are_server_errors(fake):
    client = ComfyClient(fake.url)
    with pytest.raises(ServerError, match="GET .*/queue answered HTTP 404: 404: Not Found"):
        client._json("GET", "/queue")
    fake.prompt_reply = (400, b"<html>proxy error</html>")
    with pytest.raises(ServerError, match="without JSON"):
        client.queue(GRAPH)


def test_outputs_skip_temp_previews_and_servers_are_normalised():
    files, texts = outputs_of(HISTORY_OK)
    assert [f.filename for f in files] == ["x_00001_.mp4"] and list(texts) == ["2"]
    assert normalise_server("127.0.0.1:8188/") == "http://127.0.0.1:8188"
    assert normalise_server("https://gpu.example/comfy") == "https://gpu.example/comfy"


def test_progress_printer_writes_one_line_per_node_and_step_off_a_terminal():
    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    for event in (ProgressEvent("queued", value=2), ProgressEvent("started"), ProgressEvent("queued", value=1),
                  ProgressEvent("cached", value=3), ProgressEvent("node", "11", "KSampler"),
                  ProgressEvent("step", "11", "KSampler", 2, 8), ProgressEvent("finished")):
        printer(event)
    assert stream.getvalue().splitlines() == [
        "  waiting in the server's queue: 2 prompt(s) ahead", "  3 node(s) reused from the server's cache",
        "  #11 KSampler", "  #11 KSampler: step 2/8 [######..................]"]


def test_cli_run_end_to_end_against_the_fake_server(fake, tmp_path, capsys):
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
             "2": GRAPH["2"],
             "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["4", 0]}},
             "11": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["5", 0], "seed": 0}},
             "15": GRAPH["15"]}
    workflow = tmp_path / "mine.api.json"
    workflow.write_text(json.dumps(graph))
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG")
    fake.object_info["WanAccelLoadDiTGGUF"]["input"]["required"]["unet_name"][1]["options"].append("wan.gguf")
    fake.ws_messages = [{"type": "execution_success", "data": {"prompt_id": "p1"}}]
    code = main(["run", "--server", fake.url, "--workflow", str(workflow), "--image", str(image), "--prompt", "a cat",
                 "--seed", "5", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"saved {tmp_path / 'out' / 'x_00001_.mp4'}" in out and "wall time" in out
    assert "#2 Load Wan DiT (GGUF Q6_K): Load Wan DiT (GGUF): 3.0 M parameters" in out
    queued = json.loads(next(body for _, path, body in fake.requests if path == "/prompt"))["prompt"]
    assert queued["1"]["inputs"]["image"] == "wan_accel/cat.png" and queued["5"]["inputs"]["text"] == "a cat"
    assert queued["11"]["inputs"]["seed"] == 5 and queued["15"]["inputs"]["filename_prefix"] == "wan_accel/cat"


@pytest.mark.parametrize("argv, message", [
    (["--length", "6"], "--length 6: must be 4k+1 frames"),
    (["--width", "100"], "--width 100: must be a positive multiple of 16"),
    (["--workflow", "nope.json"], "workflow file nope.json does not exist"),
])
def test_cli_usage_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    assert main(["run", "--image", "x.png", "--prompt", "p", "--server", "127.0.0.1:9", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wan-accel: error: {message}") and len(err.splitlines()) == 1
