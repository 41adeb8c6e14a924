"""A batch never hangs on a broken server: each malformed reply of a scripted fake ComfyUI on 127.0.0.1
(``tests/support/fake_comfy.py``) fails the sample it hit, as one line, and leaves that server out, while a healthy
server beside it finishes the rest; a single broken server ends the batch; an exception nobody foresaw and a results
file that cannot be written end it too. Every batch runs under a 15 s bound."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.support.fake_comfy import API_GRAPH as GRAPH
from tests.support.fake_comfy import HISTORY_OK, fake_for_graph
from wan_accel.batch.samples import Sample
from wan_accel.batch.dispatch import run_bench
from wan_accel.batch.servers import ComfyBenchServer
from wan_accel.errors import MalformedReply, UsageError, WanAccelError
from wan_accel.graph_fill import Overrides

BOUND_SECONDS = 15.0
SUCCESS = [{"type": "execution_start", "data": {"prompt_id": "p1"}},
           {"type": "execution_success", "data": {"prompt_id": "p1"}}]


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


class Gated:
    """A bench server that starts its first sample only once ``gate`` is open (or after 5 s), and opens ``opens``
    when it starts one: the broken server surely takes a sample before the healthy one runs everything."""

    def __init__(self, server: ComfyBenchServer, gate: threading.Event | None, opens: threading.Event | None):
        self.server, self.gate, self.opens, self.name = server, gate, opens, server.name

    def check(self):
        self.server.check()

    def generate(self, sample, progress):
        if self.opens is not None:
            self.opens.set()
        if self.gate is not None:
            self.gate.wait(5)
        return self.server.generate(sample, progress)

    def interrupt(self):
        self.server.interrupt()


@pytest.fixture
def fakes():
    servers = [fake_for_graph(SUCCESS), fake_for_graph(SUCCESS)]
    yield servers
    for server in servers:
        server.close()


def _samples(tmp_path: Path, count: int) -> list[Sample]:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG")
    return [Sample(f"s{i}", image, f"prompt {i}", seed=i) for i in range(count)]


def _bounded_bench(samples, servers, results: Path, **kw) -> tuple[object, Record, float]:
    """Runs the batch in a thread; (its summary or the exception it raised, the display, seconds), failing the test
    if it has not ended within ``BOUND_SECONDS``."""
    display, outcome = Record(), {}

    def target():
        try:
            outcome["value"] = run_bench(samples, servers, results, {"workflow": "fake"}, (), display, **kw)
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
def test_a_malformed_reply_fails_its_sample_and_a_healthy_server_finishes_the_rest(scenario, fakes, tmp_path):
    broken, healthy = fakes
    breaks, expected = MALFORMED[scenario]
    breaks(broken)
    started = threading.Event()
    servers = [Gated(ComfyBenchServer(broken.url, GRAPH, Overrides(), tmp_path / "a", 10.0), None, started),
               Gated(ComfyBenchServer(healthy.url, GRAPH, Overrides(), tmp_path / "b", 10.0), started, None)]
    summary, display, seconds = _bounded_bench(_samples(tmp_path, 4), servers, tmp_path / "results.json")
    print(f"\n[{scenario}] batch ended in {seconds:.2f} s")
    results = _saved(tmp_path / "results.json")
    failed = [r for r in results.values() if not r["ok"]]
    assert len(results) == 4 and summary.total == 4 and summary.failed == 1 == len(failed)
    [failure] = failed
    assert failure["server"] == servers[0].name and expected in failure["error"]
    assert "\n" not in failure["error"] and "Traceback" not in failure["error"]
    assert all(r["server"] == servers[1].name for r in results.values() if r["ok"])
    assert any(m.startswith(f"server {servers[0].name} left out: ") for m in display.messages)
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize("scenario", ["prompt answers 200 {}", "websocket frame not JSON", "view cut short"])
def test_a_single_broken_server_ends_the_batch_with_its_error(scenario, fakes, tmp_path):
    broken = fakes[0]
    MALFORMED[scenario][0](broken)
    server = ComfyBenchServer(broken.url, GRAPH, Overrides(), tmp_path, 10.0)
    error, _, _ = _bounded_bench(_samples(tmp_path, 3), [server], tmp_path / "results.json")
    assert isinstance(error, MalformedReply) and MALFORMED[scenario][1] in str(error)
    assert [(r["ok"], r["error"]) for r in _saved(tmp_path / "results.json").values()] == [(False, str(error))]


def test_an_unforeseen_exception_fails_the_sample_and_the_healthy_server_goes_on(fakes, tmp_path):
    class Buggy:
        name = "buggy:1"

        def check(self):
            pass

        def generate(self, sample, progress):
            started.set()
            raise KeyError("prompt_id")

        def interrupt(self):
            pass

    started = threading.Event()
    healthy = Gated(ComfyBenchServer(fakes[1].url, GRAPH, Overrides(), tmp_path, 10.0), started, None)
    summary, display, _ = _bounded_bench(_samples(tmp_path, 3), [Buggy(), healthy], tmp_path / "results.json")
    results = _saved(tmp_path / "results.json")
    assert summary.failed == 1 and sum(r["ok"] for r in results.values()) == 2
    [failure] = [r for r in results.values() if not r["ok"]]
    assert failure["error"].startswith("unexpected KeyError in sample s") and failure["server"] == "buggy:1"


def test_an_unforeseen_exception_in_the_start_up_check_leaves_the_server_out(fakes, tmp_path):
    class Buggy(Gated):
        def check(self):
            raise TypeError("'list' object is not a mapping")

    buggy = Buggy(ComfyBenchServer(fakes[0].url, GRAPH, Overrides(), tmp_path, 10.0), None, None)
    healthy = ComfyBenchServer(fakes[1].url, GRAPH, Overrides(), tmp_path, 10.0)
    summary, display, _ = _bounded_bench(_samples(tmp_path, 2), [buggy, healthy], tmp_path / "results.json")
    assert summary.succeeded == 2
    assert f"server {buggy.name} left out: unexpected TypeError in the check of {buggy.name}: 'list' object is not " \
           f"a mapping" in display.messages


def test_a_results_file_that_cannot_be_written_stops_the_batch_with_one_line(fakes, tmp_path):
    results = tmp_path / "results.json"
    server = ComfyBenchServer(fakes[1].url, GRAPH, Overrides(), tmp_path, 10.0)
    samples = _samples(tmp_path, 3)
    results.mkdir()   # a folder where the file goes: every write of it fails
    (results / "keep").write_text("")
    error, _, _ = _bounded_bench(samples, [server], results)
    assert isinstance(error, UsageError) and isinstance(error, WanAccelError)
    assert str(error).startswith(f"cannot write {results} (") and "\n" not in str(error)
