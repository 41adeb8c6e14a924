"""The driver of a bench on Ray workers: feed them the samples, write every result here.

The workers (:mod:`wan_accel.batch.ray_pool`) own their servers (``bench --ray``) or wrap the servers given with
``--server`` (two or more). The driver keeps one sample in flight per worker; outputs come back through Ray and are
saved here with the one ``results.json`` (same format and resume as one server, plus the node and worker of each
sample). An owning worker whose server dies exits, Ray restarts it and retries the sample; a sample whose worker is
gone for good goes to another worker, at most ``--retries`` times. A given server that stops answering gives its
sample to another worker (at most ``--retries`` times) and is checked every ``probe_seconds``, then used again once it
answers. Ctrl-C interrupts every prompt in flight and keeps what finished; at the end every live server's
``/history`` is checked for a sample run twice.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from ..client_files import save
from .faults import NoServerLeft
from .progress import Display
from .queue import SampleQueue, Task, resume_batch
from .ray_pool import RayWorker, describe, first_line
from .ray_worker import Readiness, SampleReply, WorkerInfo
from .results import BenchSummary, ResultsWriter, summarise
from .samples import JobOutcome, QualityMetric, Sample, SampleResult, active_metrics, measure_metrics
from .server_history import successes_per_sample
from .servers import server_name

POLL_SECONDS = 0.5        # how often the driver asks busy workers for their progress
JOIN_SECONDS = 30.0       # after Ctrl-C, how long interrupted prompts get to end


@dataclasses.dataclass(frozen=True)
class Patience:
    """How often a down server is checked again, and how long a stage whose servers are all down is waited for."""

    probe_seconds: float = 5.0
    give_up_seconds: float = 300.0


def run_ray_bench(samples: Sequence[Sample], workers: Sequence[RayWorker], results_path: Path, videos: Path,
                  config: Mapping[str, Any], metrics: Sequence[QualityMetric], display: Display, retries: int,
                  overwrite: bool = False, patience: Patience = Patience()) -> BenchSummary:
    """Generates every sample not already successful in ``results_path`` on the ready ``workers``."""
    writer, queue = resume_batch(samples, results_path, config, display, retries)
    batch = RayBatch(writer, queue, list(workers), metrics, display, len(samples), videos, overwrite, patience)
    return drive(batch, writer, [w.label for w in workers])


def drive(batch: "RayBatch", writer: ResultsWriter, labels: Sequence[str]) -> BenchSummary:
    """Runs ``batch`` (every in-flight prompt interrupted on Ctrl-C or an error), audits the servers' histories and
    summarises the run, counting samples per worker in ``labels``."""
    started = time.monotonic()
    try:
        batch.run()
    except BaseException:
        batch.interrupt_all()
        raise
    batch.audit()
    ran = [dataclasses.replace(r, server=r.worker) for r in batch.ran]
    return summarise(writer.results(), len(writer.resumed), ran, list(labels), time.monotonic() - started)


class RayBatch:
    """The driver's loop: one sample in flight per worker, outcomes recorded here, progress polled, down servers
    checked again."""

    def __init__(self, writer: ResultsWriter, queue: SampleQueue, workers: list[RayWorker],
                 metrics: Sequence[QualityMetric], display: Display, total: int, videos: Path, overwrite: bool,
                 patience: Patience = Patience()):
        self.writer, self.queue, self.workers, self.display = writer, queue, workers, display
        self.metrics = active_metrics(metrics, display.message)
        self.total, self.videos, self.overwrite, self.patience = total, videos, overwrite, patience
        self.ran: list[SampleResult] = []
        self.polls: dict[str, Any] = {}
        self.waiting_said = False

    def run(self) -> None:
        last_poll = 0.0
        while not self.queue.finished:
            self._probe_down()
            self._dispatch()
            pending = {ref: w for w in self.workers for ref in (w.ref, w.probe) if ref is not None}
            if pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                for ref in done:
                    worker = pending[ref]
                    if ref is worker.probe:
                        self._probed(worker)
                    else:
                        self._finished(worker)
            elif any(not w.left_out and w.down_since is not None for w in self.workers):
                time.sleep(POLL_SECONDS)
            else:
                raise NoServerLeft("every Ray worker is left out or gone; finished samples are saved, run the same "
                                   "command to resume")
            self._give_up_if_down()
            if time.monotonic() - last_poll >= POLL_SECONDS:
                self._poll_progress()
                last_poll = time.monotonic()

    def stages(self) -> list[list[RayWorker]]:
        """The groups of workers of which at least one must be up for the batch to go on."""
        return [self.workers]

    def _dispatch(self) -> None:
        for worker in self.workers:
            if not worker.idle:
                continue
            task = self.queue.take()
            if task is None:
                return
            worker.task, worker.ref = task, worker.actor.generate.remote(task.sample)
            self.display.message(f"sample {task.index}/{self.total}: {task.sample.id} on {worker.label}")

    def _probe_down(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if not worker.left_out and worker.down_since is not None and worker.probe is None \
                    and now >= worker.next_probe:
                worker.probe = worker.actor.ready.remote()

    def _give_up_if_down(self) -> None:
        """Raises ``NoServerLeft`` when every usable worker of a stage has been down for ``give_up_seconds``."""
        down = [usable for stage in self.stages() if (usable := [w for w in stage if not w.left_out])
                and all(w.down_since is not None for w in usable)]
        if not down:
            self.waiting_said = False
            return
        if not self.waiting_said:
            self.waiting_said = True
            self.display.message(f"every server is down; waiting up to {self.patience.give_up_seconds:g} s for one "
                                 f"to come back")
        for usable in down:
            if time.monotonic() - max(w.down_since for w in usable) > self.patience.give_up_seconds:
                lines = "".join(f"\n  {w.title}: {w.error}" for w in usable)
                raise NoServerLeft(f"no server answered for {self.patience.give_up_seconds:g} s; finished samples are "
                                   f"saved, run the same command to resume:{lines}")

    def _finished(self, worker: RayWorker) -> None:
        task, ref = worker.task, worker.ref
        worker.task = worker.ref = None
        try:
            reply: SampleReply = ray.get(ref)
        except RayActorError as exc:
            return self._lost(worker, task, exc)
        except RayError as exc:   # an exception nobody foresaw inside the worker: it would repeat
            worker.left_out = True
            self._record(task, SampleResult.failure(task.sample, f"{worker.label} failed: {first_line(exc)}",
                                                    worker.label), worker)
            return self.display.message(f"{worker.title} left out: {first_line(exc)}")
        self._note_restart(worker, reply.worker)
        if reply.status == "ok":
            return self._succeeded(worker, task, reply)
        if reply.status == "interrupted":
            return self.queue.put_back(task)
        if reply.status == "lost":
            return self._server_down(worker, task, reply.error or "it stopped answering")
        if reply.status == "left_out":
            worker.left_out = True
            self.display.message(f"{worker.title} left out: {reply.error}")
            if not reply.recorded:
                return self.queue.put_back(task)
        self._record(task, SampleResult.failure(task.sample, reply.error or "failed", self._server(worker)),
                     worker)

    def _lost(self, worker: RayWorker, task: Task, exc: RayActorError) -> None:
        """Ray gave up on the sample (the worker died more often than ``--retries``): another worker takes it."""
        if self.queue.lost(task, worker.label):
            self.display.message(f"{worker.title} lost sample {task.sample.id} ({first_line(exc)}); re-queued for "
                                 f"another worker (retry {len(task.lost_on)} of {self.queue.retries})")
        else:
            self._record(task, SampleResult.failure(task.sample, f"lost {len(task.lost_on)} times, workers died "
                                                    f"while running it ({', '.join(task.lost_on)})", worker.label),
                         worker)
        worker.probe = worker.actor.ready.remote()

    def _server_down(self, worker: RayWorker, task: Task, error: str) -> None:
        """The given server stopped answering during ``task``: another worker takes it (at most ``--retries``
        times), and the server is checked every ``probe_seconds``."""
        worker.down_since, worker.error = time.monotonic(), error
        worker.next_probe = worker.down_since + self.patience.probe_seconds
        if self.queue.lost(task, worker.label):
            self.display.message(f"{worker.title} stopped answering during sample {task.sample.id} ({error}); "
                                 f"re-queued for another server (retry {len(task.lost_on)} of {self.queue.retries})")
        else:
            self._record(task, SampleResult.failure(
                task.sample, f"lost {len(task.lost_on)} times, servers stopped answering while running it "
                             f"({', '.join(task.lost_on)}); last: {error}", self._server(worker)), worker)
        self.display.message(f"{worker.title} is down; checking it every {self.patience.probe_seconds:g} s")

    def _probed(self, worker: RayWorker) -> None:
        probe, worker.probe = worker.probe, None
        try:
            readiness: Readiness = ray.get(probe)
        except RayError as exc:
            worker.left_out = True
            return self.display.message(f"{worker.title} is gone: {first_line(exc)}")
        self._note_restart(worker, readiness.info)
        if readiness.problem is None:
            if worker.down_since is not None:
                worker.down_since = worker.error = None
                self.display.message(f"{worker.title} is back; using it again")
            return
        worker.error = readiness.problem
        if worker.wraps and readiness.down:
            worker.next_probe = time.monotonic() + self.patience.probe_seconds
            return
        worker.left_out = True
        self.display.message(f"{worker.title} is back but left out: {readiness.problem}")

    def _note_restart(self, worker: RayWorker, info: WorkerInfo) -> None:
        if worker.info is not None and info.pid != worker.info.pid:
            self.display.message(f"{worker.label} was restarted by Ray (its server or process died): now "
                                 f"{describe(dataclasses.replace(worker, info=info))}")
        worker.info = info

    def _server(self, worker: RayWorker) -> str | None:
        return server_name(worker.info.server_url) if worker.info is not None else None

    def _succeeded(self, worker: RayWorker, task: Task, reply: SampleReply) -> None:
        paths = [save([data], self.videos / name, self.overwrite) for name, data in reply.files]
        outcome = JobOutcome(reply.seconds, reply.queue_seconds, reply.host_seconds, paths)
        measured = measure_metrics(task.sample, outcome, self.metrics, self.display.message)
        self._record(task, SampleResult.success(task.sample, outcome, measured, self._server(worker)), worker)

    def _record(self, task: Task, result: SampleResult, worker: RayWorker) -> None:
        result = dataclasses.replace(result, worker=worker.label,
                                     node=worker.info.node if worker.info is not None else None)
        self.writer.record(result)
        self.queue.finish(task)
        self.ran.append(result)
        state = f"{result.seconds:.2f} s" if result.ok else f"FAILED: {result.error}"
        self.display.message(f"sample {task.index}/{self.total}: {task.sample.id} {state} on {worker.label}")
        failed = sum(not r.ok for r in self.ran)
        self.display.overall(len(self.ran), failed, self.total - len(self.writer.resumed))

    def _poll_progress(self) -> None:
        for label, ref in list(self.polls.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                continue
            del self.polls[label]
            try:
                latest = ray.get(ref)
            except RayError:
                continue
            if latest is not None:
                self.display.progress(label, *latest)
        for worker in self.workers:
            if worker.ref is not None and worker.label not in self.polls:
                self.polls[worker.label] = worker.actor.progress.remote()

    def interrupt_all(self) -> None:
        """Ctrl-C: interrupts every prompt in flight, keeps the samples that finish meanwhile."""
        busy = [w for w in self.workers if w.ref is not None]
        for worker in busy:
            worker.actor.interrupt.remote()
        deadline = time.monotonic() + JOIN_SECONDS
        for worker in busy:
            try:
                reply = ray.get(worker.ref, timeout=max(0.1, deadline - time.monotonic()))
            except (RayError, GetTimeoutError):
                continue
            if reply.status == "ok":
                self._succeeded(worker, worker.task, reply)

    def audit(self) -> None:
        """Every live server's ``/history`` (the prompts its worker queued): the samples it ran, and none twice."""
        for worker in [w for w in self.workers if not w.left_out and w.down_since is None]:
            try:
                counts = successes_per_sample(ray.get(worker.actor.history.remote(), timeout=60))
            except (RayError, GetTimeoutError) as exc:
                self.display.message(f"{worker.title}: its server's /history could not be read ({first_line(exc)})")
                continue
            twice = sorted(s for s, n in counts.items() if n > 1)
            line = f"{worker.title}: its server's /history holds {sum(counts.values())} finished prompt(s)"
            self.display.message(line + (f"; ran more than once: {', '.join(twice)}" if twice else
                                         f" ({', '.join(sorted(counts)) or 'none'}), none twice"))
