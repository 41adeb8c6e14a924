"""``wan-accel run`` against a scripted fake ComfyUI on 127.0.0.1 (``tests/support/fake_comfy.py``) that answers
malformed replies: each one is a one-line error naming the endpoint and what was wrong, exit code 3, never a raw
traceback; a server address that is not a URL is a one-line usage error (exit 2) before anything is sent."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.support.fake_comfy import API_GRAPH as GRAPH
from tests.support.fake_comfy import HISTORY_OK, FakeComfy, fake_for_graph
from wan_accel.cli import main
from wan_accel.client import normalise_server
from wan_accel.errors import UsageError

START = {"type": "execution_start", "data": {"prompt_id": "p1"}}
SUCCESS = {"type": "execution_success", "data": {"prompt_id": "p1"}}


def _set(**values):
    def apply(fake: FakeComfy) -> None:
        for name, value in values.items():
            setattr(fake, name, value)
    return apply


def _history(**changes) -> dict:
    return {**copy.deepcopy(HISTORY_OK), **changes}


#: name -> (what breaks the fake, the endpoint named, what the error says was wrong)
SCENARIOS = {
    "prompt 200 {}": (_set(prompt_reply=(200, {})), "POST", "the reply has no prompt_id: {}"),
    "prompt id a number": (_set(prompt_reply=(200, {"prompt_id": 7})), "POST", 'no prompt_id: {"prompt_id": 7}'),
    "prompt a JSON list": (_set(prompt_reply=(200, [])), "POST", "it answered HTTP 200 [], not an object"),
    "prompt 400 a string": (_set(prompt_reply=(400, "bad")), "POST", 'it answered HTTP 400 "bad", not an object'),
    "upload without name": (_set(upload_reply={"subfolder": "wan_accel"}), "POST",
                            'the reply names no file: {"subfolder": "wan_accel"}'),
    "upload a list": (_set(upload_reply=["cat.png"]), "POST", 'it answered ["cat.png"], not an object'),
    "websocket frame not JSON": (_set(ws_messages=["{not json"]), "the websocket",
                                 "a message is not JSON: '{not json'"),
    "websocket data a string": (_set(ws_messages=['{"type": "progress", "data": "x"}']), "the websocket",
                                "not an object with a data object"),
    "progress value a string": (_set(ws_messages=[START, {"type": "progress", "data": {
        "prompt_id": "p1", "node": "11", "value": "abc", "max": 2}}]), "the websocket",
                                "a progress message has value = 'abc', not a whole number"),
    "queue count a string": (_set(ws_messages=[{"type": "status", "data": {"status": {"exec_info": {
        "queue_remaining": "many"}}}}, SUCCESS]), "the websocket", "queue_remaining = 'many', not a whole number"),
    "warnings a string": (_set(ws_messages=[{"type": "wan_accel.stats", "data": {"prompt_id": "p1",
                                                                                "warnings": "oops"}}]),
                          "the websocket", "warnings = 'oops', not a list"),
    "history entry a string": (_set(history="done"), "GET", 'its entry is "done", not an object'),
    "history outputs a list": (_set(history=_history(outputs=[])), "GET", "its outputs are list, not an object"),
    "history node outputs a list": (_set(history=_history(outputs={"15": []})), "GET",
                                    "the outputs of node #15 are list, not an object"),
    "history file name a number": (_set(history=_history(outputs={"15": {"images": [{"filename": 5}]}})), "GET",
                                   "node #15 names a file that is not text"),
    "view cut short": (_set(view_cut=3), "GET", "the download was cut short"),
}


@pytest.fixture
def fake():
    server = fake_for_graph([SUCCESS])
    yield server
    server.close()


def _run(tmp_path: Path, server: str) -> int:
    workflow, image = tmp_path / "mine.api.json", tmp_path / "cat.png"
    workflow.write_text(json.dumps(GRAPH))
    image.write_bytes(b"\x89PNG")
    return main(["run", "--server", server, "--workflow", str(workflow), "--image", str(image), "--prompt", "a cat",
                 "--seed", "5", "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_malformed_reply_is_one_line_naming_the_endpoint(scenario, fake, tmp_path, capsys):
    breaks, endpoint, problem = SCENARIOS[scenario]
    breaks(fake)
    assert _run(tmp_path, fake.url) == 3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"wan-accel: error: {endpoint} ") and problem in err, err
    assert "Check it with: wan-accel doctor --server URL" in err
    assert not list((tmp_path / "out").glob("*"))


@pytest.mark.parametrize("address, problem", [
    ("http://[::1", "is not a URL (Invalid IPv6 URL)"),
    ("http://127.0.0.1:99999", "is not a URL (Port out of range 0-65535)"),
    ("127.0.0.1:port", "is not a URL (Port could not be cast to integer value as 'port')"),
    ("http://:8188", "is not an http(s) URL with a host"),
    ("ftp://127.0.0.1:8188", "is not an http(s) URL with a host"),
])
@pytest.mark.parametrize("command", ["run", "bench"])
def test_a_server_address_that_is_no_url_is_one_line_before_anything_is_sent(address, problem, command, tmp_path,
                                                                            capsys):
    if command == "run":
        code = _run(tmp_path, address)
    else:
        (tmp_path / "x.png").write_bytes(b"png")
        (tmp_path / "pairs.csv").write_text("image,prompt\nx.png,a cat\n")
        code = main(["bench", "--server", address, "--pairs", str(tmp_path / "pairs.csv"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"wan-accel: error: server address {address!r} {problem}; write http://HOST:PORT"), err
    assert not (tmp_path / "out").exists()


def test_good_addresses_are_kept():
    assert normalise_server(" [::1]:8188/ ") == "http://[::1]:8188"
    assert normalise_server("https://gpu.example/comfy/") == "https://gpu.example/comfy"
    with pytest.raises(UsageError, match="not a URL"):
        normalise_server("[::1")


@pytest.mark.parametrize("scenario, error_line", [
    ("node errors a list", "wan-accel: error: ComfyUI rejected the workflow: Prompt outputs failed validation"),
    ("node error entries odd", "wan-accel: error: ComfyUI rejected the workflow: Prompt outputs failed validation"),
    ("traceback entry not text", "wan-accel: error: node #11 KSampler failed: ValueError: latents are NaN"),
])
def test_odd_rejections_and_failures_still_name_what_failed(scenario, error_line, fake, tmp_path, capsys):
    error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"}
    fake.prompt_reply = {
        "node errors a list": (400, {"error": error, "node_errors": ["11"]}),
        "node error entries odd": (400, {"error": error, "node_errors": {"11": "bad", "15": {"errors": [
            "x", {"message": "Value 0 smaller than min of 1", "extra_info": "steps"}]}}}),
        "traceback entry not text": fake.prompt_reply}[scenario]
    fake.ws_messages = [{"type": "execution_error", "data": {
        "prompt_id": "p1", "node_id": "11", "node_type": "KSampler", "exception_type": "ValueError",
        "exception_message": "latents are NaN", "traceback": [None, 'File "k.py", line 3, in run\n  boom\n']}}]
    assert _run(tmp_path, fake.url) in (5, 6)
    err = capsys.readouterr().err
    assert err.splitlines()[0] == error_line and "Traceback" not in err, err
    assert err.splitlines()[1:] == {"node errors a list": [],
                                    "node error entries odd": ["  node #15 SaveVideo: Value 0 smaller than min of 1"],
                                    "traceback entry not text": ['  where: File "k.py", line 3, in run']}[scenario]
