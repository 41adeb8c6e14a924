"""The pieces of a batch: the sample queue (each sample waiting, in flight or done; lost samples re-queued up to the
retries), the server list of --server / --servers, and the progress display."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from wan_accel.batch.samples import Sample
from wan_accel.batch.progress import BatchDisplay, bar
from wan_accel.batch.queue import SampleQueue, Task
from wan_accel.batch.servers import server_name, server_urls
from wan_accel.cli import main
from wan_accel.client import ProgressEvent
from wan_accel.errors import UsageError


def tasks(count: int) -> list[Task]:
    return [Task(Sample(f"s{i}", Path("x.png"), "p"), i + 1) for i in range(count)]


def test_queue_hands_each_sample_to_one_server_and_finishes_when_all_are_done():
    queue = SampleQueue(tasks(2), retries=2)
    first, second = queue.take(), queue.take()
    assert (first.sample.id, second.sample.id) == ("s0", "s1")
    assert queue.take() is None and not queue.finished, "both in flight: nothing to take, not finished"
    queue.finish(first)
    with pytest.raises(RuntimeError, match="s0 is not in flight"):
        queue.finish(first)
    queue.put_back(second)
    assert queue.waiting == 1 and queue.take() is second
    queue.finish(second)
    assert queue.finished and queue.take() is None


def test_a_lost_sample_goes_first_in_line_until_its_retries_are_spent():
    queue = SampleQueue(tasks(3), retries=1)
    lost = queue.take()
    assert queue.lost(lost, "gpu0") is True
    assert queue.take() is lost, "re-queued at the front"
    assert queue.lost(lost, "gpu1") is False, "lost twice with one retry: the caller records it"
    assert lost.lost_on == ["gpu0", "gpu1"] and queue.waiting == 2
    queue.finish(lost)
    assert [queue.take().sample.id, queue.take().sample.id] == ["s1", "s2"]
    with pytest.raises(ValueError):
        SampleQueue([], retries=-1)


def test_server_list_from_flags_and_file(tmp_path):
    listing = tmp_path / "servers.txt"
    listing.write_text("# one per GPU\nhttp://10.0.0.2:8188\n\n10.0.0.3:8189/  # second box\n")
    assert server_urls(["127.0.0.1:8188"], str(listing)) == [
        "http://127.0.0.1:8188", "http://10.0.0.2:8188", "http://10.0.0.3:8189"]
    assert server_urls(None, None) == []
    with pytest.raises(UsageError, match="server listed twice: http://10.0.0.2:8188"):
        server_urls(["http://10.0.0.2:8188/"], str(listing))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="lists no server"):
        server_urls(None, str(tmp_path / "empty.txt"))
    with pytest.raises(UsageError, match="--servers .*absent.txt: cannot read it"):
        server_urls(None, str(tmp_path / "absent.txt"))
    assert server_name("https://gpu.example/comfy") == "gpu.example/comfy"


def test_display_in_a_log_writes_finished_steps_per_server_and_the_bar():
    stream = io.StringIO()
    display = BatchDisplay(["a:1", "bb:2"], stream)
    display.progress("a:1", "s0", ProgressEvent("node", "11", "KSampler"))
    display.progress("a:1", "s0", ProgressEvent("step", "11", "KSampler", 1, 2))
    display.progress("bb:2", "s1", ProgressEvent("step", "11", "KSampler", 2, 2))
    display.progress("a:1", "s0", ProgressEvent("warning", "3", "node #3 T5: 240 tensors missing"))
    display.message("sample 2/4: s1 3.00 s on bb:2")
    display.overall(1, 0, 4)
    assert stream.getvalue().splitlines() == [
        "  [bb:2] s1: #11 KSampler: step 2/2", "  [a:1] s0: warning: node #3 T5: 240 tensors missing",
        "sample 2/4: s1 3.00 s on bb:2", f"{bar(1, 4)} 1/4 done"]
    assert bar(1, 4) == "[######..................]"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_display_on_a_terminal_keeps_one_line_per_server_and_the_bar_at_the_bottom():
    stream = Terminal()
    display = BatchDisplay(["a", "b"], stream)
    display.overall(0, 0, 2)
    display.progress("b", "s1", ProgressEvent("step", "11", "KSampler", 1, 2))
    display.message("server a is down; checking it every 5 s")
    screen = stream.getvalue()
    last = screen.rsplit("\x1b[J", 1)[1]
    assert last.splitlines() == ["server a is down; checking it every 5 s", "  [a] idle",
                                 "  [b] s1: #11 KSampler: step 1/2", f"{bar(0, 2)} 0/2 done"]
    assert screen.count("\x1b[3F") == 2, "each redraw first moves up over the three lines it drew"


def test_bench_command_line_refuses_a_server_listed_twice(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"png")
    (tmp_path / "pairs.csv").write_text("image,prompt\nx.png,a cat\n")
    listing = tmp_path / "servers.txt"
    listing.write_text("127.0.0.1:8188\n")
    code = main(["bench", "--pairs", str(tmp_path / "pairs.csv"), "--server", "http://127.0.0.1:8188",
                 "--servers", str(listing), "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err.startswith("wan-accel: error: server listed twice: http://127.0.0.1:8188")
    assert not (tmp_path / "out").exists()
