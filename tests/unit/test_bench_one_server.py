"""A batch over several scripted servers: one shared queue, faults re-queued up to --retries, a server that comes
back is used again, validation and node failures recorded once, start-up checks, Ctrl-C on every server, resume.
Every test checks that no sample ran twice after succeeding and none was lost."""
from __future__ import annotations

import _thread
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from wan_accel.batch.samples import JobOutcome, Sample, SampleResult
from wan_accel.batch.dispatch import NoServerLeft, run_bench
from wan_accel.batch.results import ResultsWriter
from wan_accel.client_ws import ConnectionLost, ProgressEvent
from wan_accel.errors import (ExecutionFailed, Interrupted, MissingModel, MissingModelFile, PromptInvalid,
                              ServerUnreachable)

CONFIG = {"workflow": "wan21_i2v_480p_winner"}


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
    """A scripted server. ``errors[sample_id]``: exceptions its successive runs of that sample raise;
    ``checks``: exceptions its successive checks raise (None passes; once used up, every check passes unless
    ``down`` is set); ``block``: runs wait until ``interrupt`` (then raise Interrupted)."""

    def __init__(self, name, seconds=0.01, errors=None, checks=(), down=None, block=False, tmp=None):
        self.name, self.seconds, self.errors, self.checks = name, seconds, errors or {}, list(checks)
        self.down, self.block, self.tmp = down, block, tmp
        self.succeeded: list[str] = []
        self.calls: list[str] = []
        self.interrupts = 0
        self.released = threading.Event()
        self.in_flight = threading.Event()

    def check(self):
        if self.checks:
            error = self.checks.pop(0)
            if error is not None:
                raise error
        elif self.down is not None:
            raise self.down

    def generate(self, sample, progress):
        self.calls.append(sample.id)
        progress(ProgressEvent("step", "11", "KSampler", 1, 1))
        pending = self.errors.get(sample.id)
        if pending:
            raise pending.pop(0)
        if self.block:
            self.in_flight.set()
            self.released.wait(10)
            raise Interrupted("the prompt was interrupted at node #11 KSampler")
        started = time.monotonic()
        time.sleep(self.seconds)
        video = self.tmp / f"{sample.id}_{self.name}.mp4"
        video.write_bytes(sample.id.encode())
        self.succeeded.append(sample.id)
        return JobOutcome(time.monotonic() - started, 0.0, None, [video])

    def interrupt(self):
        self.interrupts += 1
        self.released.set()


def samples(tmp_path: Path, count: int) -> list[Sample]:
    image = tmp_path / "start.png"
    image.write_bytes(b"png")
    return [Sample(f"s{i}", image, f"prompt {i}", seed=i) for i in range(count)]


def saved(path: Path) -> dict[str, dict]:
    return {item["id"]: item for item in json.loads(path.read_text())["samples"]}


def assert_each_ran_once(servers, expected_ids):
    runs = Counter(i for server in servers for i in server.succeeded)
    assert runs == Counter(expected_ids), "every sample succeeded exactly once, on one server"


class SlowServer(FakeServer):
    """Starts each sample only once ``fast`` has finished ``lead`` more: slower than ``fast`` by construction."""

    def __init__(self, name, fast, lead, **kw):
        super().__init__(name, **kw)
        self.fast, self.lead = fast, lead

    def generate(self, sample, progress):
        deadline = time.monotonic() + 10
        while len(self.fast.succeeded) < self.lead * (len(self.succeeded) + 1) and time.monotonic() < deadline:
            time.sleep(0.005)
        return super().generate(sample, progress)


def test_two_servers_share_one_queue_and_the_faster_takes_more(tmp_path):
    fast = FakeServer("fast", 0.01, tmp=tmp_path)
    slow = SlowServer("slow", fast, lead=3, seconds=0.01, tmp=tmp_path)
    batch, record = samples(tmp_path, 12), Record()
    summary = run_bench(batch, [fast, slow], tmp_path / "results.json", CONFIG, (), record)
    assert_each_ran_once([fast, slow], [s.id for s in batch])
    assert len(fast.succeeded) >= 3 * len(slow.succeeded) and len(slow.succeeded) >= 1
    results = saved(tmp_path / "results.json")
    assert list(results) == [s.id for s in batch], "the file keeps the order of the pairs"
    assert {i for i, r in results.items() if r["server"] == "slow"} == set(slow.succeeded)
    assert [(t.name, t.samples) for t in summary.servers] == [("fast", len(fast.succeeded)),
                                                              ("slow", len(slow.succeeded))]
    assert summary.sample_seconds == pytest.approx(sum(r["seconds"] for r in results.values()), abs=0.01)
    assert "sample 1/12: s0 on fast" in record.messages or "sample 1/12: s0 on slow" in record.messages
    assert record.totals[-1] == (12, 0, 12)
    assert ("slow", slow.succeeded[0], "step") in record.events
    lines = summary.lines()
    assert lines[2] == f"server fast: {len(fast.succeeded)} sample(s) this run, mean " \
                       f"{summary.servers[0].mean_seconds:.2f} s/sample"
    assert lines[-1] == (f"batch wall time {summary.wall_seconds:.2f} s, sum of sample times "
                         f"{summary.sample_seconds:.2f} s -> parallel speed-up {summary.speedup:.2f}x")


def test_two_equal_servers_take_about_half_the_wall_time(tmp_path):
    a, b = FakeServer("a", 0.1, tmp=tmp_path), FakeServer("b", 0.1, tmp=tmp_path)
    summary = run_bench(samples(tmp_path, 8), [a, b], tmp_path / "results.json", CONFIG, (), Record())
    assert_each_ran_once([a, b], [f"s{i}" for i in range(8)])
    assert summary.sample_seconds >= 0.8
    assert summary.speedup > 1.4, "two servers run side by side: the sum of sample times is about twice the wall"


def test_a_server_that_stops_answering_gives_its_sample_back_and_is_used_again_when_back(tmp_path):
    steady = FakeServer("steady", 0.05, tmp=tmp_path)
    flaky = FakeServer("flaky", 0.01, errors={"s0": [unreachable("flaky")]}, tmp=tmp_path,
                       checks=[None, unreachable("flaky"), unreachable("flaky")])
    batch, record = samples(tmp_path, 12), Record()
    summary = run_bench(batch, [flaky, steady], tmp_path / "results.json", CONFIG, (), record, probe_seconds=0.02)
    assert_each_ran_once([flaky, steady], [s.id for s in batch])
    assert flaky.calls[0] == "s0" and "s0" in steady.succeeded, "the lost sample went to the other server"
    assert flaky.succeeded, "the server that came back took samples again"
    assert any(m.startswith("server flaky stopped answering during sample s0 (cannot reach ComfyUI at http://flaky")
               and m.endswith("re-queued for another server (retry 1 of 2)") for m in record.messages)
    assert "server flaky is back; using it again" in record.messages
    assert summary.failed == 0 and all(r["ok"] for r in saved(tmp_path / "results.json").values())


def test_a_dropped_websocket_counts_as_a_lost_sample_and_retries_are_bounded(tmp_path):
    lost = ConnectionLost("ComfyUI at http://a closed the websocket while prompt p1 was running")
    a = FakeServer("a", errors={"s0": [lost, unreachable("a")]}, tmp=tmp_path)
    b = FakeServer("b", errors={"s0": [unreachable("b"), unreachable("b")]}, tmp=tmp_path)
    batch, record = samples(tmp_path, 4), Record()
    summary = run_bench(batch, [a, b], tmp_path / "results.json", CONFIG, (), record, retries=1, probe_seconds=0.01)
    assert Counter(a.calls + b.calls)["s0"] == 2, "one run plus one retry"
    assert_each_ran_once([a, b], ["s1", "s2", "s3"])
    result = saved(tmp_path / "results.json")["s0"]
    assert not result["ok"] and result["error"].startswith("lost 2 times, servers stopped answering while running it")
    assert summary.failed == 1 and summary.succeeded == 3


def test_validation_and_node_failures_are_recorded_once_not_retried(tmp_path):
    invalid = PromptInvalid("Prompt outputs failed validation", ["node #11 KSampler, input steps: Value 0 smaller"])
    failed = ExecutionFailed("2", "Load Wan DiT", "ValueError", "broken.gguf is not a GGUF file")
    a = FakeServer("a", errors={"s0": [invalid], "s1": [failed]}, tmp=tmp_path)
    b = FakeServer("b", errors={"s0": [invalid], "s1": [failed]}, tmp=tmp_path)
    summary = run_bench(samples(tmp_path, 3), [a, b], tmp_path / "results.json", CONFIG, (), Record())
    calls = Counter(a.calls + b.calls)
    assert calls["s0"] == 1 and calls["s1"] == 1
    results = saved(tmp_path / "results.json")
    assert results["s0"]["error"].startswith("ComfyUI rejected the workflow: Prompt outputs failed validation")
    assert results["s1"]["error"] == "node #2 Load Wan DiT failed: ValueError: broken.gguf is not a GGUF file"
    assert (summary.succeeded, summary.failed) == (1, 2)


def test_start_up_check_reports_and_skips_bad_servers(tmp_path):
    missing = MissingModel([MissingModelFile("wan.gguf", "diffusion_models", "2", "Load Wan DiT", "unet_name")])
    gone = FakeServer("gone", down=unreachable("gone"), tmp=tmp_path)
    empty = FakeServer("empty", checks=[missing], tmp=tmp_path)
    good = FakeServer("good", tmp=tmp_path)
    record = Record()
    summary = run_bench(samples(tmp_path, 3), [gone, empty, good], tmp_path / "results.json", CONFIG, (), record,
                        probe_seconds=0.01)
    assert good.succeeded == ["s0", "s1", "s2"] and gone.calls == [] and empty.calls == []
    assert record.messages[:3] == [
        "server gone left out for now (checked again while the batch runs): cannot reach ComfyUI at http://gone "
        "(connection refused). Start it (python main.py --listen 127.0.0.1 --port 8188) or pass --server "
        "http://HOST:PORT",
        f"server empty left out: {missing}", "server good: ready"]
    assert [t.samples for t in summary.servers] == [0, 0, 3]


def test_the_batch_stops_only_when_no_server_is_usable(tmp_path):
    missing = MissingModel([MissingModelFile("wan.gguf", "diffusion_models", "2", "Load Wan DiT", "unet_name")])
    with pytest.raises(MissingModel):
        run_bench(samples(tmp_path, 2), [FakeServer("only", checks=[missing])], tmp_path / "r.json", CONFIG, (),
                  Record())
    with pytest.raises(NoServerLeft) as caught:
        run_bench(samples(tmp_path, 2), [FakeServer("a", down=unreachable("a")), FakeServer("b", checks=[missing])],
                  tmp_path / "r.json", CONFIG, (), Record())
    assert str(caught.value).startswith("no server passed the start-up check")
    assert "\n  a: cannot reach ComfyUI at http://a" in str(caught.value) and "\n  b: missing model file" in str(
        caught.value)
    assert not (tmp_path / "r.json").exists()


def test_a_server_left_out_mid_batch_hands_its_sample_over_uncounted(tmp_path):
    missing = MissingModel([MissingModelFile("wan.gguf", "diffusion_models", "2", "Load Wan DiT", "unet_name")])
    a = FakeServer("a", errors={"s0": [missing]}, tmp=tmp_path)
    b = FakeServer("b", 0.05, tmp=tmp_path)
    record = Record()
    run_bench(samples(tmp_path, 3), [a, b], tmp_path / "results.json", CONFIG, (), record, retries=0)
    assert a.calls == ["s0"] and sorted(b.succeeded) == ["s0", "s1", "s2"]
    assert f"server a left out: {missing}" in record.messages


def test_every_server_down_for_too_long_stops_the_batch_without_losing_the_sample(tmp_path):
    only = FakeServer("only", errors={"s0": [unreachable("only")]}, checks=[None], down=unreachable("only"))
    record = Record()
    with pytest.raises(ServerUnreachable):
        run_bench(samples(tmp_path, 2), [only], tmp_path / "results.json", CONFIG, (), record, probe_seconds=0.01,
                  give_up_seconds=0.2)
    assert "every server is down; waiting up to 0.2 s for one to come back" in record.messages
    assert not (tmp_path / "results.json").exists(), "the lost sample is not recorded as failed: a rerun runs it"


def test_ctrl_c_interrupts_the_prompt_in_flight_on_every_server_and_a_rerun_resumes(tmp_path):
    a = FakeServer("a", block=True, tmp=tmp_path)
    b = FakeServer("b", block=True, tmp=tmp_path)
    batch = samples(tmp_path, 4)
    results = tmp_path / "results.json"
    ResultsWriter(results, CONFIG, batch).record(SampleResult.success(
        batch[0], JobOutcome(3.0, 0.0, None, [tmp_path / "s0.mp4"]), {}, "a"))

    def press_ctrl_c():
        if a.in_flight.wait(5) and b.in_flight.wait(5):
            _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_bench(batch, [a, b], results, CONFIG, (), Record())
    assert (a.interrupts, b.interrupts) == (1, 1)
    assert sorted(a.calls + b.calls) == ["s1", "s2"]
    assert list(saved(results)) == ["s0"], "interrupted samples are not recorded"

    again_a, again_b = FakeServer("a", tmp=tmp_path), FakeServer("b", tmp=tmp_path)
    record = Record()
    summary = run_bench(batch, [again_a, again_b], results, CONFIG, (), record)
    assert_each_ran_once([again_a, again_b], ["s1", "s2", "s3"])
    assert record.messages[0] == f"resuming: 1 finished sample(s) in {results} are skipped"
    assert (summary.succeeded, summary.skipped) == (4, 1)
