"""A batch over one or many servers: one shared queue, one thread per server, faults re-queued, Ctrl-C everywhere.

Each server first passes a start-up check (reachable, the workflow's node types loaded, its model files present).
A server that is unreachable then is reported and checked again every ``probe_seconds``; one that lacks nodes or
files is left out of the batch. While the batch runs, a server that stops answering (or whose websocket drops)
gives its sample back to the queue for another server, at most ``retries`` times, and is used again once its check
passes. A sample that fails validation or fails inside a node is recorded as failed, never retried. A reply that
cannot be parsed (or any exception nobody foresaw) fails its sample and leaves that server out: it would answer the
next sample the same way. Every outcome moves the sample out of flight, so a batch always ends. Ctrl-C interrupts
the prompt in flight on every server; finished samples are already saved.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..client_ws import ConnectionLost, ProgressEvent
from ..errors import MalformedReply, MissingModel, MissingNodeType, ServerUnreachable, WanAccelError
from .queue import SampleQueue, Task
from .results import BenchSummary, ResultsWriter, summarise
from .samples import JobOutcome, QualityMetric, Sample, SampleResult, measure_metrics

#: A server that raises one of these stopped answering: its sample is re-queued and the server checked again later.
FAULTS = (ServerUnreachable, ConnectionLost)


class Unforeseen(WanAccelError):
    """An exception nobody foresaw, raised while checking a server or running a sample, as a one-line error."""

    def __init__(self, exc: BaseException, where: str):
        super().__init__(f"unexpected {type(exc).__name__} in {where}: {exc}"[:500])


#: A server that raises one of these cannot run this workflow: it is left out of the batch.
UNUSABLE = (MissingModel, MissingNodeType, MalformedReply, Unforeseen)
TAKE_SECONDS = 0.2        # how long an idle server waits for a sample before looking at the batch's state again
JOIN_SECONDS = 30.0       # after Ctrl-C, how long to wait for the servers' interrupted prompts to end


class BenchServer(Protocol):
    """One server of a batch, as the dispatcher drives it."""

    name: str

    def check(self) -> None:
        """Raises the reason the server cannot run the batch now (a ``WanAccelError``)."""

    def generate(self, sample: Sample, progress: Callable[[ProgressEvent], None]) -> JobOutcome:
        """Runs one sample to its downloaded outputs."""

    def interrupt(self) -> None:
        """Stops the prompt this server is running for the batch, if any (called from another thread)."""


class Display(Protocol):
    """Where the batch reports: messages, progress per server, the overall count."""

    def message(self, text: str) -> None: ...

    def progress(self, server: str, sample_id: str, event: ProgressEvent) -> None: ...

    def overall(self, done: int, failed: int, total: int) -> None: ...


class NoServerLeft(WanAccelError):
    """Every server of the batch is left out or has stopped answering; what finished is saved."""

    exit_code = 3


@dataclass
class _ServerState:
    server: BenchServer
    up: bool = True
    left_out: bool = False
    error: WanAccelError | None = None
    task: Task | None = None
    thread: threading.Thread | None = None


@dataclass
class _Batch:
    queue: SampleQueue
    writer: ResultsWriter
    metrics: Sequence[QualityMetric]
    display: Display
    total: int
    many: bool
    probe_seconds: float
    stop: threading.Event = field(default_factory=threading.Event)
    interrupted: threading.Event = field(default_factory=threading.Event)
    ran: list[SampleResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fatal: BaseException | None = None   # the batch's own bookkeeping failed (e.g. results.json cannot be written)

    def record(self, task: Task, result: SampleResult) -> None:
        """Saves one result, counts it for this run's summary, shows it."""
        self.writer.record(result)
        self.queue.finish(task)
        with self.lock:
            self.ran.append(result)
            done, failed = len(self.ran), sum(not r.ok for r in self.ran)
        state = f"{result.seconds:.2f} s" if result.ok else f"FAILED: {result.error}"
        where = f" on {result.server}" if self.many else ""
        self.display.message(f"sample {task.index}/{self.total}: {task.sample.id} {state}{where}")
        self.display.overall(done, failed, self.total - len(self.writer.resumed))


def run_bench(samples: Sequence[Sample], servers: Sequence[BenchServer], results_path: Path,
              config: Mapping[str, Any], metrics: Sequence[QualityMetric], display: Display, retries: int = 2,
              probe_seconds: float = 5.0, give_up_seconds: float = 300.0) -> BenchSummary:
    """Generates every sample not already successful in ``results_path`` on ``servers``; returns the summary.

    Raises the start-up error when no server is usable (the only server's own error when there is one),
    ``NoServerLeft`` when every server stays down for ``give_up_seconds``, ``KeyboardInterrupt`` on Ctrl-C.
    """
    writer = ResultsWriter(results_path, config, samples)
    if writer.resumed:
        display.message(f"resuming: {len(writer.resumed)} finished sample(s) in {results_path} are skipped")
    active = []
    for metric in metrics:
        reason = metric.unavailable_reason()
        if reason is None:
            active.append(metric)
        else:
            display.message(f"metric {metric.name} skipped: {reason}")
    states = [_ServerState(server) for server in servers]
    for state in states:
        _start_up(state, display)
    if not any(state.up for state in states):
        raise _no_server_error(states, "no server passed the start-up check")
    tasks = [Task(s, i) for i, s in enumerate(samples, start=1) if s.id not in writer.resumed]
    batch = _Batch(SampleQueue(tasks, retries), writer, active, display, len(samples), len(servers) > 1,
                   probe_seconds)
    started = time.monotonic()
    try:
        for state in states:
            if not state.left_out:
                state.thread = threading.Thread(target=_work, args=(batch, state), daemon=True,
                                                name=f"bench {state.server.name}")
                state.thread.start()
        _wait(batch, states, give_up_seconds)
    except BaseException:
        batch.stop.set()
        for state in states:
            if state.task is not None:
                try:
                    state.server.interrupt()
                except WanAccelError as exc:
                    display.message(f"server {state.server.name}: could not interrupt its prompt: {exc}")
        _join(states, JOIN_SECONDS)
        raise
    batch.stop.set()   # servers still down stop checking
    _join(states, JOIN_SECONDS)
    return summarise(writer.results(), len(writer.resumed), batch.ran, [s.server.name for s in states],
                     time.monotonic() - started)


def _check(server: BenchServer) -> None:
    """``server.check()``; an exception nobody foresaw becomes an ``Unforeseen`` error, which leaves it out."""
    try:
        server.check()
    except WanAccelError:
        raise
    except Exception as exc:
        raise Unforeseen(exc, f"the check of {server.name}") from exc


def _start_up(state: _ServerState, display: Display) -> None:
    name = state.server.name
    try:
        _check(state.server)
    except UNUSABLE as exc:
        state.up, state.left_out, state.error = False, True, exc
        display.message(f"server {name} left out: {exc}")
    except WanAccelError as exc:
        state.up, state.error = False, exc
        display.message(f"server {name} left out for now (checked again while the batch runs): {exc}")
    else:
        display.message(f"server {name}: ready")


def _no_server_error(states: Sequence[_ServerState], why: str) -> WanAccelError:
    """The only server's own error (so its exit code is kept), or one naming every server's problem."""
    if len(states) == 1 and states[0].error is not None:
        return states[0].error
    lines = "".join(f"\n  {s.server.name}: {s.error}" for s in states)
    return NoServerLeft(f"{why}; finished samples are saved, run the same command to resume:{lines}")


def _wait(batch: _Batch, states: Sequence[_ServerState], give_up_seconds: float) -> None:
    """Returns when the queue is done; raises when the user interrupts or no server is left."""
    all_down_since = None
    while not batch.queue.finished:
        if batch.interrupted.is_set():
            raise KeyboardInterrupt
        if batch.fatal is not None:
            raise batch.fatal
        usable = [s for s in states if not s.left_out]
        if not usable:
            raise _no_server_error(states, "every server was left out")
        if any(s.up for s in usable):
            all_down_since = None
        elif all_down_since is None:
            all_down_since = time.monotonic()
            batch.display.message(f"every server is down; waiting up to {give_up_seconds:g} s for one to come back")
        elif time.monotonic() - all_down_since > give_up_seconds:
            raise _no_server_error(states, f"no server answered for {give_up_seconds:g} s")
        batch.queue.wait_change(TAKE_SECONDS)


def _join(states: Sequence[_ServerState], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for state in states:
        if state.thread is not None:
            state.thread.join(max(0.0, deadline - time.monotonic()))


def _work(batch: _Batch, state: _ServerState) -> None:
    """One server's loop: take the next sample, run it, record it; while the server is down, check it again."""
    while not batch.stop.is_set() and not state.left_out:
        if not state.up:
            if batch.stop.wait(batch.probe_seconds):
                return
            _probe(batch, state)
            continue
        task = batch.queue.take(TAKE_SECONDS)
        if task is None:
            if batch.queue.finished:
                return
            continue
        state.task = task
        try:
            _run(batch, state, task)
        except BaseException as exc:  # recording the outcome failed: stop the batch rather than wait for the sample
            batch.fatal = exc if isinstance(exc, WanAccelError) else Unforeseen(exc, "the batch's bookkeeping")
            batch.stop.set()
            return
        finally:
            state.task = None


def _probe(batch: _Batch, state: _ServerState) -> None:
    try:
        _check(state.server)
    except UNUSABLE as exc:
        state.left_out, state.error = True, exc
        batch.display.message(f"server {state.server.name} is back but left out: {exc}")
    except WanAccelError:
        return
    else:
        state.up, state.error = True, None
        batch.display.message(f"server {state.server.name} is back; using it again")


def _run(batch: _Batch, state: _ServerState, task: Task) -> None:
    """Runs one task on one server and decides what its outcome means for the sample and the server."""
    name, sample = state.server.name, task.sample
    where = f" on {name}" if batch.many else ""
    batch.display.message(f"sample {task.index}/{batch.total}: {sample.id}{where}")
    try:
        outcome = state.server.generate(sample, lambda event: batch.display.progress(name, sample.id, event))
    except KeyboardInterrupt:  # Ctrl-C reaches only the main thread; this is a job that raised it itself
        batch.stop.set()
        batch.interrupted.set()
        batch.queue.put_back(task)
        return
    except FAULTS as exc:
        if batch.stop.is_set():
            return batch.queue.put_back(task)
        state.up, state.error = False, exc
        if batch.queue.lost(task, name):
            batch.display.message(f"server {name} stopped answering during sample {sample.id} ({exc}); re-queued "
                                  f"for another server (retry {len(task.lost_on)} of {batch.queue.retries})")
        else:
            batch.record(task, SampleResult.failure(
                sample, f"lost {len(task.lost_on)} times, servers stopped answering while running it "
                        f"({', '.join(task.lost_on)}); last: {exc}", name))
        batch.display.message(f"server {name} is down; checking it every {batch.probe_seconds:g} s")
        return
    except MalformedReply as exc:
        return _fail_and_leave_out(batch, state, task, exc)
    except UNUSABLE as exc:
        batch.queue.put_back(task)
        state.up, state.left_out, state.error = False, True, exc
        batch.display.message(f"server {name} left out: {exc}")
        return
    except WanAccelError as exc:
        if batch.stop.is_set():
            return batch.queue.put_back(task)
        batch.record(task, SampleResult.failure(sample, str(exc), name))
        return
    except Exception as exc:
        return _fail_and_leave_out(batch, state, task, Unforeseen(exc, f"sample {sample.id} on {name}"))
    measured = measure_metrics(sample, outcome, batch.metrics, batch.display.message)
    batch.record(task, SampleResult.success(sample, outcome, measured, name))


def _fail_and_leave_out(batch: _Batch, state: _ServerState, task: Task, error: WanAccelError) -> None:
    """The sample fails with ``error`` and its server is left out of the batch (its next reply would be the same)."""
    if batch.stop.is_set():
        return batch.queue.put_back(task)
    batch.record(task, SampleResult.failure(task.sample, str(error), state.server.name))
    state.up, state.left_out, state.error = False, True, error
    batch.display.message(f"server {state.server.name} left out: {error}")
