"""A batch on one scripted server, the plain loop of ``wan-accel bench --server URL``: in this thread, no Ray; a
sample whose server stops answering runs again once the server answers (at most --retries times), validation and
node failures recorded once, the start-up check's error ends the batch before any sample, a server down for too
long ends it without losing the sample. Every test checks that no sample ran twice after succeeding."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from wan_accel.batch.faults import Unforeseen
from wan_accel.batch.one_server import run_one_server
from wan_accel.batch.samples import JobOutcome, Sample
from wan_accel.client_ws import ConnectionLost, ProgressEvent
from wan_accel.errors import (ExecutionFailed, MissingModel, MissingModelFile, PromptInvalid, ServerUnreachable)

CONFIG = {"workflow": "wan21_i2v_480p_winner"}
REPO_ROOT = Path(__file__).resolve().parents[2]


class Record:
    """A display that keeps every message and progress event."""

    def __init__(self):
        self.messages: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.totals: list[tuple[int, int, int]] = []

    def message(self, text):
        self.messages.append(text)

    def progress(self, server, sample_id, event):
        self.events.append((server, sample_id, event.kind))

    def overall(self, done, failed, total):
        self.totals.append((done, failed, total))


def unreachable(name: str) -> ServerUnreachable:
    return ServerUnreachable(f"http://{name}", "connection refused")


class FakeServer:
    """A scripted server. ``errors[sample_id]``: exceptions its successive runs of that sample raise; ``checks``:
    exceptions its successive checks raise (None passes; once used up, every check passes unless ``down`` is set).
    Records the thread each sample ran on."""

    def __init__(self, name, tmp, errors=None, checks=(), down=None):
        self.name, self.tmp, self.errors, self.checks, self.down = name, tmp, errors or {}, list(checks), down
        self.succeeded: list[str] = []
        self.calls: list[str] = []
        self.threads: set[threading.Thread] = set()
        self.check_count = 0

    def check(self):
        self.check_count += 1
        if self.checks:
            error = self.checks.pop(0)
            if error is not None:
                raise error
        elif self.down is not None:
            raise self.down

    def generate(self, sample, progress):
        self.calls.append(sample.id)
        self.threads.add(threading.current_thread())
        progress(ProgressEvent("step", "11", "KSampler", 1, 1))
        pending = self.errors.get(sample.id)
        if pending:
            raise pending.pop(0)
        video = self.tmp / f"{sample.id}.mp4"
        video.write_bytes(sample.id.encode())
        self.succeeded.append(sample.id)
        return JobOutcome(0.5, 0.0, None, [video])


def samples(tmp_path: Path, count: int) -> list[Sample]:
    image = tmp_path / "start.png"
    image.write_bytes(b"png")
    return [Sample(f"s{i}", image, f"prompt {i}", seed=i) for i in range(count)]


def saved(path: Path) -> dict[str, dict]:
    return {item["id"]: item for item in json.loads(path.read_text())["samples"]}


def test_the_batch_runs_in_order_on_this_thread_and_reports_progress(tmp_path):
    server, record = FakeServer("local:1", tmp_path), Record()
    summary = run_one_server(samples(tmp_path, 3), server, tmp_path / "results.json", CONFIG, (), record)
    assert server.succeeded == ["s0", "s1", "s2"] and server.threads == {threading.main_thread()}
    assert record.messages[:3] == ["server local:1: ready", "sample 1/3: s0", "sample 1/3: s0 0.50 s"]
    assert record.events[0] == ("local:1", "s0", "step") and record.totals[-1] == (3, 0, 3)
    assert [(t.name, t.samples) for t in summary.servers] == [("local:1", 3)]
    assert {r["server"] for r in saved(tmp_path / "results.json").values()} == {"local:1"}


def test_a_sample_whose_server_stops_answering_runs_again_once_it_answers(tmp_path):
    server = FakeServer("flaky", tmp_path, errors={"s1": [unreachable("flaky")]},
                        checks=[None, unreachable("flaky"), unreachable("flaky")])
    record = Record()
    summary = run_one_server(samples(tmp_path, 3), server, tmp_path / "results.json", CONFIG, (), record,
                             probe_seconds=0.01)
    assert server.calls == ["s0", "s1", "s1", "s2"] and Counter(server.succeeded) == Counter(["s0", "s1", "s2"])
    assert server.check_count == 4, "the start-up check, two failed probes, one that passed"
    assert any(m.startswith("server flaky stopped answering during sample s1 (cannot reach ComfyUI at http://flaky")
               and m.endswith("it runs again once the server answers (retry 1 of 2)") for m in record.messages)
    assert "server flaky is down; checking it every 0.01 s, for up to 300 s" in record.messages
    assert "server flaky is back; using it again" in record.messages
    assert summary.failed == 0 and all(r["ok"] for r in saved(tmp_path / "results.json").values())


def test_a_dropped_websocket_counts_as_a_lost_sample_and_retries_are_bounded(tmp_path):
    lost = ConnectionLost("ComfyUI at http://a closed the websocket while prompt p1 was running")
    server = FakeServer("a", tmp_path, errors={"s0": [lost, unreachable("a")]})
    summary = run_one_server(samples(tmp_path, 3), server, tmp_path / "results.json", CONFIG, (), Record(),
                             retries=1, probe_seconds=0.01)
    assert server.calls == ["s0", "s0", "s1", "s2"], "one run plus one retry, then the rest"
    assert server.succeeded == ["s1", "s2"]
    result = saved(tmp_path / "results.json")["s0"]
    assert not result["ok"] and result["error"].startswith("lost 2 times, the server stopped answering while "
                                                          "running it; last: cannot reach ComfyUI at http://a")
    assert (summary.failed, summary.succeeded) == (1, 2)


def test_validation_and_node_failures_are_recorded_once_not_retried(tmp_path):
    invalid = PromptInvalid("Prompt outputs failed validation", ["node #11 KSampler, input steps: Value 0 smaller"])
    failed = ExecutionFailed("2", "Load Wan DiT", "ValueError", "broken.gguf is not a GGUF file")
    server = FakeServer("a", tmp_path, errors={"s0": [invalid], "s1": [failed]})
    summary = run_one_server(samples(tmp_path, 3), server, tmp_path / "results.json", CONFIG, (), Record())
    assert server.calls == ["s0", "s1", "s2"]
    results = saved(tmp_path / "results.json")
    assert results["s0"]["error"].startswith("ComfyUI rejected the workflow: Prompt outputs failed validation")
    assert results["s1"]["error"] == "node #2 Load Wan DiT failed: ValueError: broken.gguf is not a GGUF file"
    assert (summary.succeeded, summary.failed) == (1, 2)


@pytest.mark.parametrize("problem", ["unreachable", "missing", "unforeseen"])
def test_the_start_up_check_error_ends_the_batch_before_any_sample(problem, tmp_path):
    errors = {"unreachable": unreachable("gone"),
              "missing": MissingModel([MissingModelFile("wan.gguf", "diffusion_models", "2", "Load Wan DiT",
                                                        "unet_name")]),
              "unforeseen": TypeError("'list' object is not a mapping")}
    server = FakeServer("gone", tmp_path, checks=[errors[problem]])
    with pytest.raises((ServerUnreachable, MissingModel, Unforeseen)) as caught:
        run_one_server(samples(tmp_path, 2), server, tmp_path / "results.json", CONFIG, (), Record())
    if problem == "unforeseen":
        assert str(caught.value) == "unexpected TypeError in the check of gone: 'list' object is not a mapping"
    else:
        assert caught.value is errors[problem], "the server's own error, so its exit code is kept"
    assert server.calls == [] and not (tmp_path / "results.json").exists()


def test_a_server_down_for_too_long_ends_the_batch_without_losing_the_sample(tmp_path):
    server = FakeServer("only", tmp_path, errors={"s1": [unreachable("only")]}, checks=[None],
                        down=unreachable("only"))
    record, started = Record(), time.monotonic()
    with pytest.raises(ServerUnreachable):
        run_one_server(samples(tmp_path, 3), server, tmp_path / "results.json", CONFIG, (), record,
                       probe_seconds=0.01, give_up_seconds=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    assert "server only is down; checking it every 0.01 s, for up to 0.2 s" in record.messages
    assert list(saved(tmp_path / "results.json")) == ["s0"], "the lost s1 is not recorded as failed: a rerun runs it"


def test_a_server_back_without_the_model_ends_the_batch_with_that_error(tmp_path):
    missing = MissingModel([MissingModelFile("wan.gguf", "diffusion_models", "2", "Load Wan DiT", "unet_name")])
    server = FakeServer("a", tmp_path, errors={"s0": [unreachable("a")]}, checks=[None, missing])
    with pytest.raises(MissingModel):
        run_one_server(samples(tmp_path, 2), server, tmp_path / "results.json", CONFIG, (), Record(),
                       probe_seconds=0.01)
    assert server.calls == ["s0"] and not (tmp_path / "results.json").exists()


def test_one_server_never_imports_ray(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "a.txt").write_text("a cat", encoding="utf-8")
    code = ("import sys; from wan_accel.cli import main; "
            f"status = main(['bench', '--server', 'http://127.0.0.1:9', '--pairs', {str(tmp_path)!r}, '--out', "
            f"{str(tmp_path / 'out')!r}]); print(status, 'ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    header, result = done.stdout.splitlines()
    assert header.startswith("wan-accel bench: wan21_i2v_480p_winner on 127.0.0.1:9, 1 sample(s)")
    assert result.split() == [str(ServerUnreachable.exit_code), "False"], done.stderr
    assert "cannot reach ComfyUI at http://127.0.0.1:9" in done.stderr
