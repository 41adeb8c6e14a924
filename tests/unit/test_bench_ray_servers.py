"""Two or more given servers run on Ray: one Ray worker wrapping each scripted fake ComfyUI on 127.0.0.1
(``tests/support/fake_comfy.py``), on a Ray this module starts once (2 CPUs, no dashboard).

Proven here: two servers share a batch and each sample is queued exactly once over both; a server that stops
answering gives its sample to the other, is checked again and used once it answers; a sample lost on every server is
failed after ``--retries``; a malformed reply fails its sample and leaves that server out while the other finishes;
no server passing the start-up check ends the batch before any sample; the CLI runs two ``--server`` on Ray; Ctrl-C
interrupts the prompt in flight on every server, keeps what finished, and the same batch resumes the rest."""
from __future__ import annotations

import _thread
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.support.fake_comfy import API_GRAPH, SUCCESS, fake_for_graph, two_succeeding_fakes
from wan_accel.batch.faults import NoServerLeft
from wan_accel.batch.samples import Sample
from wan_accel.batch.servers import server_name
from wan_accel.graph_fill import Overrides

ray = pytest.importorskip("ray")
from wan_accel.batch import ray_batch, ray_pool  # noqa: E402  (needs Ray)

REPO_ROOT = Path(__file__).resolve().parents[2]
PATIENCE = ray_batch.Patience(probe_seconds=0.05, give_up_seconds=30.0)


@pytest.fixture(scope="module")
def ray_address() -> str:
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                       logging_level="WARNING")
    try:
        yield context.address_info["address"]
    finally:
        ray.shutdown()


@pytest.fixture
def fakes():
    with two_succeeding_fakes() as servers:
        yield servers


class Record:
    """A display that keeps the messages; ``said(text)`` waits for a message starting with ``text``."""

    def __init__(self):
        self.messages: list[str] = []
        self.changed = threading.Condition()

    def message(self, text):
        with self.changed:
            self.messages.append(text)
            self.changed.notify_all()

    def progress(self, server, sample_id, event):
        pass

    def overall(self, done, failed, total):
        pass

    def said(self, text: str, timeout: float = 20.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(m.startswith(text) for m in self.messages), timeout)


def samples(tmp_path: Path, count: int) -> list[Sample]:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG")
    return [Sample(f"s{i}", image, f"prompt {i}", seed=i) for i in range(count)]


def queued_samples(fake) -> list[str]:
    """The samples whose prompt ``fake`` was sent (the output prefix names the sample)."""
    graphs = [json.loads(body)["prompt"] for method, path, body in fake.requests if path == "/prompt"]
    return [node["inputs"]["filename_prefix"].rsplit("/", 1)[1] for graph in graphs for node in graph.values()
            if "filename_prefix" in node["inputs"]]


def saved(path: Path) -> dict[str, dict]:
    return {item["id"]: item for item in json.loads(path.read_text())["samples"]}


def run_on(urls: list[str], batch: list[Sample], out: Path, display: Record, retries: int = 2):
    """Wrapping workers for ``urls``, their start-up check, the batch; the workers always stopped."""
    pool = ray_pool.start_server_workers(urls, API_GRAPH, Overrides(), 10.0, [None] * len(urls))
    try:
        ray_pool.wait_ready(pool, display, PATIENCE.probe_seconds)
        (out / "videos").mkdir(parents=True, exist_ok=True)
        return ray_batch.run_ray_bench(batch, pool, out / "results.json", out / "videos", {"workflow": "fake"}, [],
                                       display, retries, patience=PATIENCE)
    finally:
        ray_pool.stop_workers(pool)


def test_two_servers_share_a_batch_and_queue_each_sample_once(ray_address, fakes, tmp_path):
    for fake in fakes:
        fake.ws_delay = 0.05
    record = Record()
    summary = run_on([f.url for f in fakes], samples(tmp_path, 6), tmp_path, record)
    names = [server_name(f.url) for f in fakes]
    on = {name: queued_samples(fake) for name, fake in zip(names, fakes)}
    assert all(on.values()), "both servers took samples"
    assert Counter(on[names[0]] + on[names[1]]) == Counter(f"s{i}" for i in range(6)), "each queued once"
    results = saved(tmp_path / "results.json")
    assert [(i, r["ok"]) for i, r in results.items()] == [(f"s{i}", True) for i in range(6)]
    assert all(r["id"] in on[r["server"]] and r["worker"] == r["server"] for r in results.values())
    assert any(m.startswith(f"server {names[0]} (Ray worker pid ") and m.endswith(": ready") for m in record.messages)
    assert [(t.name, t.samples) for t in summary.servers] == [(n, len(on[n])) for n in names]
    assert len(list((tmp_path / "videos").iterdir())) == 6


def test_a_server_that_stops_answering_gives_its_sample_to_the_other_and_is_used_again_once_back(
        ray_address, fakes, tmp_path):
    flaky, steady = fakes
    steady.ws_delay = 0.3
    port, record = int(flaky.url.rsplit(":", 1)[1]), Record()
    back = []

    def come_back():
        if record.said(f"server {server_name(flaky.url)} is down"):
            back.append(fake_for_graph(SUCCESS, port))

    pool = ray_pool.start_server_workers([flaky.url, steady.url], API_GRAPH, Overrides(), 10.0, [None, None])
    try:
        ray_pool.wait_ready(pool, record, PATIENCE.probe_seconds)
        flaky.close()   # passed its start-up check, then stopped answering
        threading.Thread(target=come_back, daemon=True).start()
        (tmp_path / "videos").mkdir()
        summary = ray_batch.run_ray_bench(samples(tmp_path, 8), pool, tmp_path / "results.json", tmp_path / "videos",
                                          {"workflow": "fake"}, [], record, 2, patience=PATIENCE)
    finally:
        ray_pool.stop_workers(pool)
        for fake in back:
            fake.close()
    name = server_name(flaky.url)
    assert any(m.startswith(f"server {name} stopped answering during sample s0 (cannot reach ComfyUI at ")
               and m.endswith("re-queued for another server (retry 1 of 2)") for m in record.messages)
    assert f"server {name} is back; using it again" in record.messages
    [again] = back
    assert queued_samples(flaky) == [] and queued_samples(again), "the server that came back took samples again"
    assert Counter(queued_samples(again) + queued_samples(steady)) == Counter(f"s{i}" for i in range(8))
    results = saved(tmp_path / "results.json")
    assert results["s0"]["server"] == server_name(steady.url), "the lost sample ran on the other server"
    assert summary.failed == 0 and all(r["ok"] for r in results.values())


def test_a_sample_lost_on_every_server_fails_after_the_retries(ray_address, fakes, tmp_path):
    for fake in fakes:
        fake.ws_messages, fake.drop_ws = [], True   # every prompt's websocket drops
    record = Record()
    summary = run_on([f.url for f in fakes], samples(tmp_path, 1), tmp_path, record, retries=1)
    names = [server_name(f.url) for f in fakes]
    assert [queued_samples(f) for f in fakes] == [["s0"], ["s0"]], "one run plus one retry, on the other server"
    [result] = saved(tmp_path / "results.json").values()
    assert not result["ok"] and result["error"].startswith(
        f"lost 2 times, servers stopped answering while running it ({names[0]}, {names[1]}); last: ComfyUI at ")
    assert summary.failed == 1


@pytest.mark.parametrize("breaks, expected", [
    (lambda f: setattr(f, "prompt_reply", (200, {})), "the reply has no prompt_id"),
    (lambda f: setattr(f, "ws_messages", ["<html>oops"]), "a message is not JSON"),
    (lambda f: setattr(f, "view_cut", 4), "the download was cut short"),
], ids=["no prompt_id", "websocket not JSON", "view cut short"])
def test_a_malformed_reply_fails_its_sample_and_leaves_that_server_out(breaks, expected, ray_address, fakes,
                                                                      tmp_path):
    broken, healthy = fakes
    breaks(broken)
    record = Record()
    summary = run_on([broken.url, healthy.url], samples(tmp_path, 4), tmp_path, record)
    results = saved(tmp_path / "results.json")
    [failure] = [r for r in results.values() if not r["ok"]]
    assert failure["id"] == "s0" and failure["server"] == server_name(broken.url) and expected in failure["error"]
    assert "\n" not in failure["error"] and "Traceback" not in failure["error"]
    assert any(m.startswith(f"server {server_name(broken.url)} left out: ") for m in record.messages)
    assert queued_samples(broken) in ([], ["s0"]) and sorted(queued_samples(healthy)) == ["s1", "s2", "s3"]
    assert (summary.succeeded, summary.failed) == (3, 1)


def test_no_server_passing_the_start_up_check_ends_the_batch_before_any_sample(ray_address, fakes, tmp_path):
    down, lacking = fakes
    down.close()
    lacking.object_info.pop("KSampler")
    with pytest.raises(NoServerLeft) as caught:
        run_on([down.url, lacking.url], samples(tmp_path, 2), tmp_path, Record())
    message = str(caught.value)
    assert message.startswith("no server passed the start-up check; nothing ran:")
    assert f"\n  server {server_name(down.url)}: cannot reach ComfyUI at {down.url}" in message
    assert f"\n  server {server_name(lacking.url)}: " in message and "KSampler" in message
    assert not (tmp_path / "results.json").exists()


def test_the_cli_runs_two_servers_on_ray(ray_address, fakes, tmp_path):
    workflow = tmp_path / "graph.json"
    workflow.write_text(json.dumps(API_GRAPH), encoding="utf-8")
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "a.txt").write_text("a cat", encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "wan_accel", "bench", "--workflow", str(workflow), "--server",
                           fakes[0].url, "--server", fakes[1].url, "--ray", ray_address, "--pairs", str(tmp_path),
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    names = [server_name(f.url) for f in fakes]
    assert f"wan-accel bench: graph on {names[0]}, {names[1]} (a Ray worker each), 1 sample(s)" in done.stdout
    assert "to 2 ready worker(s)" in done.stdout and "1/1 samples succeeded, 0 failed" in done.stdout
    [result] = saved(out / "results.json").values()
    assert result["ok"] and result["server"] in names


def test_ctrl_c_interrupts_every_prompt_in_flight_keeps_what_finished_and_resumes(ray_address, fakes, tmp_path):
    for fake in fakes:
        fake.ws_delay = 1.0

    def press_ctrl_c():
        if all(fake.answered.wait(20) for fake in fakes):
            _thread.interrupt_main()

    batch = samples(tmp_path, 4)
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_on([f.url for f in fakes], batch, tmp_path, Record())
    for fake in fakes:
        assert [path for method, path, _ in fake.requests if method == "POST"][-2:] == ["/interrupt", "/queue"], \
            "its prompt in flight was interrupted and taken off the queue"
    first = saved(tmp_path / "results.json")
    assert sorted(first) == ["s0", "s1"] and all(r["ok"] for r in first.values()), "finished meanwhile: kept"

    for fake in fakes:
        fake.ws_delay, fake.requests[:] = 0.0, []
    record = Record()
    summary = run_on([f.url for f in fakes], batch, tmp_path, record)
    assert f"resuming: 2 finished sample(s) in {tmp_path / 'results.json'} are skipped" in record.messages
    assert sorted(queued_samples(fakes[0]) + queued_samples(fakes[1])) == ["s2", "s3"]
    assert (summary.succeeded, summary.skipped) == (4, 2)
