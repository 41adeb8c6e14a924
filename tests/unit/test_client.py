"""The host API client against a scripted fake ComfyUI on 127.0.0.1 (``tests/support/fake_comfy.py``): progress
events, outputs, downloads, every error a user can meet (formatted per node and input, never as raw JSON, with the
warnings our nodes sent before it), a dropped websocket, the bench's server check and interrupt, and doctor with
the server down."""
from __future__ import annotations

import io
import json
import socket
import time
from types import SimpleNamespace

import pytest

from tests.support.fake_comfy import HISTORY_OK, FakeComfy
from wan_accel.batch.samples import Sample
from wan_accel.batch.servers import ComfyBenchServer
from wan_accel.cli import ProgressPrinter, main
from wan_accel import client as client_module
from wan_accel import client_ws
from wan_accel.client import ComfyClient, ProgressEvent, normalise_server, outputs_of
from wan_accel.client_ws import ConnectionLost
from wan_accel.doctor import NOT_CHECKED_EXIT, run_doctor
from wan_accel.graph_fill import Overrides
from wan_accel.errors import (ExecutionFailed, Interrupted, MissingModel, MissingNodeType, PromptInvalid,
                              ServerError, ServerUnreachable)

GRAPH = {
    "2": {"class_type": "WanAccelLoadDiTGGUF", "inputs": {"unet_name": "wan.gguf", "compute_dtype": "auto"},
          "_meta": {"title": "Load Wan DiT (GGUF Q6_K)"}},
    "9": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
    "11": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "steps": 0}, "_meta": {"title": "KSampler"}},
    "15": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "wan_accel/x"}, "_meta": {"title": "Save video"}},
}
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
    assert [(f.node_id, f.filename, f.subfolder) for f in execution.files] == [("15", "x_00001_.mp4", "wan_accel")]
    assert execution.texts == {"2": ["Load Wan DiT (GGUF): 3.0 M parameters"]}
    [saved] = [client.download(f, tmp_path) for f in execution.files]
    assert saved.read_bytes() == b"video:wan_accel/x_00001_.mp4" and not list(tmp_path.glob("*.part"))
    posted = json.loads(next(body for method, path, body in fake.requests if path == "/prompt"))
    assert posted == {"prompt": GRAPH, "client_id": client.client_id}
    assert any(path == f"/ws?clientId={client.client_id}" for _, path, _ in fake.requests)


def test_queue_and_run_times_are_split_at_the_execution_start_message(fake, monkeypatch):
    """The client's clock is moved 3 s while the prompt is posted, 1 s at the host's queue status and 5 s at each
    of the two progress messages: queue time is up to execution_start (4 s), run time from there to the end (10 s)."""
    fake.ws_messages = [{"type": "execution_start", "data": {"prompt_id": "p1"}},
                        _progress("11", 1, 2), _progress("11", 2, 2),
                        {"type": "execution_success", "data": {"prompt_id": "p1"}}]
    moved = {"seconds": 0.0}
    clock = SimpleNamespace(monotonic=lambda: time.monotonic() + moved["seconds"], sleep=time.sleep)
    monkeypatch.setattr(client_module, "time", clock)
    monkeypatch.setattr(client_ws, "time", clock)
    client = ComfyClient(fake.url)
    queue = client.queue

    def slow_queue(graph):
        reply = queue(graph)
        moved["seconds"] += 3.0
        return reply

    def on_progress(event: ProgressEvent) -> None:
        moved["seconds"] += {"queued": 1.0, "step": 5.0}.get(event.kind, 0.0)

    monkeypatch.setattr(client, "queue", slow_queue)
    execution = client.execute(GRAPH, on_progress, timeout=30)
    print(f"\nqueue {execution.queue_seconds:.3f} s, run {execution.seconds:.3f} s")
    assert 4.0 <= execution.queue_seconds < 5.0  # real time adds a little
    assert 10.0 <= execution.seconds < 11.0


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


def test_a_failure_shows_the_warnings_our_nodes_sent_before_it(fake):
    fake.ws_messages = [
        {"type": "wan_accel.stats", "data": {
            "node_id": "3", "node_type": "WanAccelLoadTextEncoderFP8", "prompt_id": "p1", "time": 1.0,
            "stats": {"resident_bytes": 10}, "lines": ["weights: F8_E4M3×169"],
            "warnings": ["240 tensors missing from the file (left uninitialised)"]}},
        {"type": "wan_accel.stats", "data": {"node_id": "7", "node_type": "WanAccelLoadVAE", "prompt_id": "other",
                                             "warnings": ["not this prompt's"]}},
        {"type": "execution_error", "data": {
            "prompt_id": "p1", "node_id": "11", "node_type": "KSampler", "exception_type": "ValueError",
            "exception_message": "latents are NaN", "traceback": []}}]
    events: list[ProgressEvent] = []
    with pytest.raises(ExecutionFailed) as caught:
        ComfyClient(fake.url).execute(GRAPH, events.append, timeout=10)
    assert str(caught.value) == ("node #11 KSampler failed: ValueError: latents are NaN\n"
                                 "  warnings the server reported before the failure:\n"
                                 "    node #3 WanAccelLoadTextEncoderFP8: 240 tensors missing from the file "
                                 "(left uninitialised)")
    assert caught.value.exit_code == 6
    assert [e.label for e in events if e.kind == "warning"] == [
        "node #3 WanAccelLoadTextEncoderFP8: 240 tensors missing from the file (left uninitialised)"]


def test_a_dropped_websocket_interrupts_the_prompt_and_says_the_connection_was_lost(fake):
    fake.ws_messages = [{"type": "execution_start", "data": {"prompt_id": "p1"}}]
    fake.drop_ws = True
    client = ComfyClient(fake.url)
    with pytest.raises(ConnectionLost, match="closed the websocket while prompt p1 was running"):
        client.execute(GRAPH, timeout=10)
    assert ("POST", "/interrupt", b'{"prompt_id": "p1"}') in fake.requests
    assert client.prompt_in_flight is None


def test_bench_server_check_needs_every_node_type_and_model_file(fake, tmp_path):
    server = ComfyBenchServer(fake.url, GRAPH, Overrides(), tmp_path, 10.0)
    assert server.name == fake.url.split("://", 1)[1]
    with pytest.raises(MissingNodeType, match="no node type KSampler \\(node #11\\)"):
        server.check()
    fake.object_info.update({"KSampler": {"input": {}}, "SaveVideo": {"input": {}}})
    with pytest.raises(MissingModel, match="wan.gguf: put it in ComfyUI/models/diffusion_models/"):
        server.check()
    fake.object_info["WanAccelLoadDiTGGUF"]["input"]["required"]["unet_name"][1]["options"].append("wan.gguf")
    fake.object_info["VAELoader"]["input"]["required"]["vae_name"][0].append("wan_2.1_vae.safetensors")
    server.check()
    assert [path for _, path, _ in fake.requests].count("/object_info") == 3, "one /object_info per check"


def test_doctor_with_the_server_down_says_nothing_was_checked_and_fails(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lines: list[str] = []
    assert run_doctor(f"127.0.0.1:{port}", None, lines.append) == NOT_CHECKED_EXIT != 0
    verdicts = [line for line in lines if " (wan21_i2v_480p_" in line]
    assert len(verdicts) == 3
    assert all(line.endswith("NOT checked (server unreachable and no --comfyui folder to look in)")
               for line in verdicts)
    assert not any("ready" in line for line in lines)
    assert lines[-1] == (f"could not check the server at http://127.0.0.1:{port} (its nodes and model lists are "
                         f"unchecked): start it (or pass --server) and run doctor again")


def test_doctor_with_the_server_down_checks_files_in_the_comfyui_folder_but_still_fails(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lines: list[str] = []
    assert run_doctor(f"127.0.0.1:{port}", tmp_path, lines.append) == NOT_CHECKED_EXIT
    assert any(line.endswith(": 4 problem(s)") for line in lines)
    assert any("[missing] models/vae/wan_2.1_vae.safetensors" in line for line in lines)
    assert lines[-1].startswith(f"could not check the server at http://127.0.0.1:{port} ")


def test_bench_server_interrupts_a_prompt_queued_just_after_ctrl_c(fake, tmp_path):
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}}, "2": GRAPH["2"],
             "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["4", 0]}},
             "11": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["5", 0], "seed": 0}},
             "15": GRAPH["15"]}
    fake.object_info["WanAccelLoadDiTGGUF"]["input"]["required"]["unet_name"][1]["options"].append("wan.gguf")
    fake.ws_messages = [{"type": "execution_start", "data": {"prompt_id": "p1"}},
                        {"type": "execution_interrupted", "data": {"prompt_id": "p1", "node_id": "11",
                                                                   "node_type": "KSampler", "executed": []}}]
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG")
    server = ComfyBenchServer(fake.url, graph, Overrides(), tmp_path, 10.0)
    server.interrupt()  # Ctrl-C while the worker was still uploading: no prompt to interrupt yet
    assert not any(path == "/interrupt" for _, path, _ in fake.requests)
    with pytest.raises(Interrupted):
        server.generate(Sample("cat", image, "a cat", 1), lambda event: None)
    assert ("POST", "/interrupt", b'{"prompt_id": "p1"}') in fake.requests
