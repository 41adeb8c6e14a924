"""A one-server batch never hangs on a broken server: each malformed reply of a scripted fake ComfyUI on 127.0.0.1
(``tests/support/fake_comfy.py``) fails the sample it hit, as one line, and ends the batch with that error (the next
sample would get the same); an exception nobody foresaw and a results file that cannot be written end it too. Every
batch runs under a 15 s bound. A broken server beside a healthy one, on Ray: ``test_bench_ray_servers.py``."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.support.fake_comfy import API_GRAPH as GRAPH
from tests.support.fake_comfy import HISTORY_OK, SUCCESS, two_succeeding_fakes
from wan_accel.batch.faults import Unforeseen
from wan_accel.batch.samples import Sample
from wan_accel.batch.one_server import run_one_server
from wan_accel.batch.servers import ComfyBenchServer
from wan_accel.errors import MalformedReply, UsageError, WanAccelError
from wan_accel.graph_fill import Overrides

BOUND_SECONDS = 15.0


def _progress(value) -> dict:
    return {"type": "progress", "data": {"prompt_id": "p1", "node": "11", "value": value, "max": 2}}


#: name -> (what breaks the fake, a piece of the one-line error the sample gets)
MALFORMED = {
    "prompt answers 200 {}": (lambda f: setattr(f, "prompt_reply", (200, {})), "the reply has no prompt_id"),
    "prompt answers a list": (lambda f: setattr(f, "prompt_reply", (200, ["p1"])), 'HTTP 200 ["p1"], not an object'),
    "prompt 400 is a list": (lambda f: setattr(f, "prompt_reply", (400, [])), "HTTP 400 [], not an object"),
    "websocket frame not JSON": (lambda f: setattr(f, "ws_messages", ["<html>oops"]), "a message is not JSON"),
    "websocket message a list": (lambda f: setattr(f, "ws_messages", ["[1, 2]"]), "not an object with a data"),
    "progress value a string": (lambda f: setattr(f, "ws_messages", [SUCCESS[0], _progress("abc")]),
                                "a progress message has value = 'abc', not a whole number"),
    "cached nodes a number": (lambda f: setattr(f, "ws_messages", [
        {"type": "execution_cached", "data": {"prompt_id": "p1", "nodes": 3}}]), "nodes = 3, not a list"),
    "upload reply without name": (lambda f: setattr(f, "upload_reply", {"subfolder": "wan_accel"}),
                                  "the reply names no file"),
    "history entry a list": (lambda f: setattr(f, "history", []), "its entry is [], not an object"),
    "history outputs a list": (lambda f: setattr(f, "history", {**HISTORY_OK, "outputs": [1]}),
                               "its outputs are list, not an object"),
    "view cut short": (lambda f: setattr(f, "view_cut", 4), "the download was cut short"),
}


class Record:
    """A display that keeps the batch's messages."""

    def __init__(self):
        self.messages: list[str] = []

    def message(self, text):
        self.messages.append(text)

    def progress(self, server, sample_id, event):
        pass

    def overall(self, done, failed, total):
        pass


@pytest.fixture
def fakes():
    with two_succeeding_fakes() as servers:
        yield servers


def _samples(tmp_path: Path, count: int) -> list[Sample]:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG")
    return [Sample(f"s{i}", image, f"prompt {i}", seed=i) for i in range(count)]


def _bounded_bench(samples, server, results: Path, **kw) -> tuple[object, Record, float]:
    """Runs the batch in a thread; (its summary or the exception it raised, the display, seconds), failing the test
    if it has not ended within ``BOUND_SECONDS``."""
    display, outcome = Record(), {}

    def target():
        try:
            outcome["value"] = run_one_server(samples, server, results, {"workflow": "fake"}, (), display, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["value"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BOUND_SECONDS)
    assert not thread.is_alive(), f"the batch still runs after {BOUND_SECONDS:g} s: {display.messages[-5:]}"
    return outcome["value"], display, time.monotonic() - started


def _saved(path: Path) -> dict[str, dict]:
    return {item["id"]: item for item in json.loads(path.read_text())["samples"]}


@pytest.mark.parametrize("scenario", list(MALFORMED))
def test_a_malformed_reply_fails_its_sample_as_one_line_and_ends_the_batch(scenario, fakes, tmp_path):
    broken = fakes[0]
    MALFORMED[scenario][0](broken)
    server = ComfyBenchServer(broken.url, GRAPH, Overrides(), tmp_path, 10.0)
    error, display, seconds = _bounded_bench(_samples(tmp_path, 3), server, tmp_path / "results.json")
    print(f"\n[{scenario}] batch ended in {seconds:.2f} s")
    assert isinstance(error, MalformedReply) and MALFORMED[scenario][1] in str(error)
    assert [(r["ok"], r["error"], r["server"]) for r in _saved(tmp_path / "results.json").values()] == [
        (False, str(error), server.name)]
    assert "\n" not in str(error) and "Traceback" not in str(error)
    assert display.messages[-1] == f"sample 1/3: s0 FAILED: {error}"
    assert not list(tmp_path.rglob("*.part"))


def test_an_unforeseen_exception_fails_the_sample_as_one_line_and_ends_the_batch(tmp_path):
    class Buggy:
        name = "buggy:1"

        def check(self):
            pass

        def generate(self, sample, progress):
            raise KeyError("prompt_id")

    error, _, _ = _bounded_bench(_samples(tmp_path, 3), Buggy(), tmp_path / "results.json")
    assert isinstance(error, Unforeseen) and str(error) == "unexpected KeyError in sample s0 on buggy:1: 'prompt_id'"
    assert [(r["id"], r["ok"], r["error"]) for r in _saved(tmp_path / "results.json").values()] == [
        ("s0", False, str(error))]


def test_a_results_file_that_cannot_be_written_stops_the_batch_with_one_line(fakes, tmp_path):
    results = tmp_path / "results.json"
    server = ComfyBenchServer(fakes[1].url, GRAPH, Overrides(), tmp_path, 10.0)
    samples = _samples(tmp_path, 3)
    results.mkdir()   # a folder where the file goes: every write of it fails
    (results / "keep").write_text("")
    error, _, _ = _bounded_bench(samples, server, results)
    assert isinstance(error, UsageError) and isinstance(error, WanAccelError)
    assert str(error).startswith(f"cannot write {results} (") and "\n" not in str(error)
