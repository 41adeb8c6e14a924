"""A bench over Ray workers (``wan-accel bench --ray``): connect to Ray, start one worker actor per GPU (or
``--ray-workers N`` without GPUs), feed them the samples, write every result on this driver.

Each worker (:mod:`wan_accel.batch.ray_worker`) owns a ComfyUI server on its node. The driver keeps one sample in flight
per worker; outputs come back through Ray and are saved here with the one ``results.json`` (same format and resume
as ``bench``, plus the node and worker of each sample). A worker whose server dies exits, Ray restarts it and retries
the sample (``max_restarts`` / ``max_task_retries`` = ``--retries``); a sample whose worker is gone for good goes to
another worker, at most ``--retries`` times. Ctrl-C interrupts every prompt in flight and keeps what finished; at the
end every live server's ``/history`` is checked for a sample run twice.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from ..client_files import save
from ..errors import UsageError
from ..graph_fill import Overrides
from .dispatch import Display, NoServerLeft
from .queue import SampleQueue, Task
from .ray_worker import BenchWorker, SampleReply, WorkerInfo
from .results import BenchSummary, ResultsWriter, summarise
from .samples import JobOutcome, QualityMetric, Sample, SampleResult, measure_metrics
from .server_history import successes_per_sample
from .servers import server_name

POLL_SECONDS = 0.5        # how often the driver asks busy workers for their progress
JOIN_SECONDS = 30.0       # after Ctrl-C, how long interrupted prompts get to end
STOP_SECONDS = 30.0       # how long workers get to stop their servers at the end


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker starts: the ComfyUI folder (same path on every node), its Python, its base folder, the
    workflow and its overrides, the prompt timeout and the server's start-up limit."""

    comfyui_dir: str
    python: str | None
    base_dir: str | None
    template: Mapping[str, Any]
    base: Overrides
    timeout: float
    start_timeout: float


@dataclass
class RayWorker:
    """One actor as the driver sees it: its label, where it runs, the sample in flight, whether it is usable."""

    label: str
    actor: Any
    info: WorkerInfo | None = None
    task: Task | None = None
    ref: Any = None             # the generate call in flight
    probe: Any = None           # a ready() call: is the worker back after Ray gave up on a sample?
    left_out: bool = False


def connect(address: str, workers: int | None) -> bool:
    """``ray.init`` on ``local`` (a new Ray on this machine, no dashboard), ``auto`` (the cluster this
    node joined with ``ray start``) or a cluster address; True when this call started the Ray it uses."""
    if address == "local":
        cpus = max(os.cpu_count() or 1, workers or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 log_to_driver=False, logging_level="WARNING")
        return True
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except ConnectionError as exc:
        raise UsageError(f"--ray {address}: no Ray cluster there ({exc}); start one with `ray start --head` on the "
                         f"head node and `ray start --address HEAD:6379` on the others, or use --ray local") from None
    return False


def plan(requested: int | None) -> tuple[int, int]:
    """(number of workers, GPUs per worker): one per GPU of the cluster (or ``requested`` of them), each holding
    one; ``requested`` CPU workers on a cluster without GPUs."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if requested is not None and requested < 1:
        raise UsageError(f"--ray-workers {requested}: give 1 or more")
    if gpus == 0 and requested is None:
        raise UsageError("the Ray cluster has no GPU; pass --ray-workers N to run N CPU workers (each ComfyUI "
                         "then runs with --cpu)")
    if gpus and requested is not None and requested > gpus:
        raise UsageError(f"--ray-workers {requested}: the cluster has {gpus} GPU(s), one per worker")
    return (requested or gpus), (1 if gpus else 0)


def start_workers(spec: WorkerSpec, count: int, gpus: int, retries: int) -> list[RayWorker]:
    """Creates the actors (spread over the nodes); each starts its server in its constructor."""
    options = dict(num_gpus=gpus, num_cpus=1, max_restarts=retries, max_task_retries=retries,
                   scheduling_strategy="SPREAD")
    return [RayWorker(f"worker {i}", BenchWorker.options(**options).remote(
        spec.comfyui_dir, spec.python, spec.base_dir, spec.template, spec.base, spec.timeout, spec.start_timeout))
        for i in range(1, count + 1)]


def describe(worker: RayWorker) -> str:
    """``worker 1 on node 10.0.0.5 (pid 123, GPU 0): ComfyUI http://127.0.0.1:40123 (pid 456)``."""
    info = worker.info
    gpus = f"GPU {','.join(info.gpus)}" if info.gpus else "CPU only"
    return (f"{worker.label} on node {info.node} (pid {info.pid}, {gpus}): ComfyUI {info.server_url} "
            f"(pid {info.server_pid})")


def wait_ready(workers: Sequence[RayWorker], display: Display) -> None:
    """Waits for every worker's server and start-up check; a worker that fails either is left out."""
    calls = {w.label: w.actor.ready.remote() for w in workers}
    for worker in workers:
        try:
            worker.info, problem = ray.get(calls[worker.label])
        except RayError as exc:
            worker.left_out = True
            display.message(f"{worker.label} left out: its server did not start: {_first_line(exc)}")
            continue
        if problem is not None:
            worker.left_out = True
            display.message(f"{describe(worker)} left out: {problem}")
        else:
            display.message(f"{describe(worker)}, ready after {worker.info.startup_seconds:.1f} s")
    if all(w.left_out for w in workers):
        raise NoServerLeft("no Ray worker passed the start-up check (see the lines above); nothing ran")


def stop_workers(workers: Sequence[RayWorker]) -> None:
    """Stops every worker's server, then the actors."""
    calls = [w.actor.stop.remote() for w in workers]
    try:
        ray.wait(calls, num_returns=len(calls), timeout=STOP_SECONDS)
    finally:
        for worker in workers:
            ray.kill(worker.actor, no_restart=True)


def run_ray_bench(samples: Sequence[Sample], workers: Sequence[RayWorker], results_path: Path, videos: Path,
                  config: Mapping[str, Any], metrics: Sequence[QualityMetric], display: Display, retries: int,
                  overwrite: bool = False) -> BenchSummary:
    """Generates every sample not already successful in ``results_path`` on the ready ``workers``."""
    writer, queue = resume_batch(samples, results_path, config, display, retries)
    batch = RayBatch(writer, queue, list(workers), metrics, display, len(samples), videos, overwrite)
    return drive(batch, writer, [w.label for w in workers])


def resume_batch(samples: Sequence[Sample], results_path: Path, config: Mapping[str, Any], display: Display,
                 retries: int) -> tuple[ResultsWriter, SampleQueue]:
    """The results writer (earlier results loaded, the resume said) and the queue of the samples still to run."""
    writer = ResultsWriter(results_path, config, samples)
    if writer.resumed:
        display.message(f"resuming: {len(writer.resumed)} finished sample(s) in {results_path} are skipped")
    queue = SampleQueue([Task(s, i) for i, s in enumerate(samples, start=1) if s.id not in writer.resumed], retries)
    return writer, queue


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


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


class RayBatch:
    """The driver's loop: one sample in flight per worker, outcomes recorded here, progress polled."""

    def __init__(self, writer: ResultsWriter, queue: SampleQueue, workers: list[RayWorker],
                 metrics: Sequence[QualityMetric], display: Display, total: int, videos: Path, overwrite: bool):
        self.writer, self.queue, self.workers, self.display = writer, queue, workers, display
        self.metrics = [m for m in metrics if m.unavailable_reason() is None]
        for metric in metrics:
            if metric not in self.metrics:
                display.message(f"metric {metric.name} skipped: {metric.unavailable_reason()}")
        self.total, self.videos, self.overwrite = total, videos, overwrite
        self.ran: list[SampleResult] = []
        self.polls: dict[str, Any] = {}

    def run(self) -> None:
        last_poll = 0.0
        while not self.queue.finished:
            self._dispatch()
            pending = {ref: w for w in self.workers for ref in (w.ref, w.probe) if ref is not None}
            if not pending:
                raise NoServerLeft("every Ray worker is left out or gone; finished samples are saved, run the same "
                                   "command to resume")
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                worker = pending[ref]
                if ref is worker.probe:
                    self._probed(worker)
                else:
                    self._finished(worker)
            if time.monotonic() - last_poll >= POLL_SECONDS:
                self._poll_progress()
                last_poll = time.monotonic()

    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.left_out or worker.ref is not None or worker.probe is not None:
                continue
            task = self.queue.take(0)
            if task is None:
                return
            worker.task, worker.ref = task, worker.actor.generate.remote(task.sample)
            self.display.message(f"sample {task.index}/{self.total}: {task.sample.id} on {worker.label}")

    def _finished(self, worker: RayWorker) -> None:
        task, ref = worker.task, worker.ref
        worker.task = worker.ref = None
        try:
            reply: SampleReply = ray.get(ref)
        except RayActorError as exc:
            return self._lost(worker, task, exc)
        except RayError as exc:   # an exception nobody foresaw inside the worker: it would repeat
            worker.left_out = True
            self._record(task, SampleResult.failure(task.sample, f"{worker.label} failed: {_first_line(exc)}",
                                                    worker.label), worker)
            return self.display.message(f"{worker.label} left out: {_first_line(exc)}")
        self._note_restart(worker, reply.worker)
        if reply.status == "ok":
            return self._succeeded(worker, task, reply)
        if reply.status == "interrupted":
            return self.queue.put_back(task)
        if reply.status == "left_out":
            worker.left_out = True
            self.display.message(f"{worker.label} left out: {reply.error}")
            if not reply.recorded:
                return self.queue.put_back(task)
        self._record(task, SampleResult.failure(task.sample, reply.error or "failed", self._server(worker)),
                     worker)

    def _lost(self, worker: RayWorker, task: Task, exc: RayActorError) -> None:
        """Ray gave up on the sample (the worker died more often than ``--retries``): another worker takes it."""
        if self.queue.lost(task, worker.label):
            self.display.message(f"{worker.label} lost sample {task.sample.id} ({_first_line(exc)}); re-queued for "
                                 f"another worker (retry {len(task.lost_on)} of {self.queue.retries})")
        else:
            self._record(task, SampleResult.failure(task.sample, f"lost {len(task.lost_on)} times, workers died "
                                                    f"while running it ({', '.join(task.lost_on)})", worker.label),
                         worker)
        worker.probe = worker.actor.ready.remote()

    def _probed(self, worker: RayWorker) -> None:
        probe, worker.probe = worker.probe, None
        try:
            info, problem = ray.get(probe)
        except RayError as exc:
            worker.left_out = True
            return self.display.message(f"{worker.label} is gone: {_first_line(exc)}")
        self._note_restart(worker, info)
        if problem is not None:
            worker.left_out = True
            self.display.message(f"{worker.label} is back but left out: {problem}")

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
        """Every live server's ``/history``: the samples it ran, and none twice."""
        live = [w for w in self.workers if not w.left_out]
        for worker in live:
            try:
                counts = successes_per_sample(ray.get(worker.actor.history.remote(), timeout=60))
            except (RayError, GetTimeoutError) as exc:
                self.display.message(f"{worker.label}: its server's /history could not be read ({_first_line(exc)})")
                continue
            twice = sorted(s for s, n in counts.items() if n > 1)
            line = f"{worker.label}: its server's /history holds {sum(counts.values())} finished prompt(s)"
            self.display.message(line + (f"; ran more than once: {', '.join(twice)}" if twice else
                                         f" ({', '.join(sorted(counts)) or 'none'}), none twice"))

