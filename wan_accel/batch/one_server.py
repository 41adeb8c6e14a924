"""A batch on one server (``wan-accel bench`` with one ``--server``): a plain loop in this process, no threads, no Ray.

The server first passes the start-up check (reachable, the workflow's node types loaded, its model files present);
if it fails, the batch ends with that error before any sample. A server that stops answering during a sample (or
whose websocket drops) is checked again every ``probe_seconds``; once it answers, the sample runs again, at most
``retries`` times, then it is recorded as failed; a server still down after ``give_up_seconds`` ends the batch with
its error. A sample that fails validation or inside a node is recorded as failed, never retried. A reply that
cannot be parsed (or an exception nobody foresaw) fails its sample and ends the batch: the next sample would get the
same. Ctrl-C interrupts the prompt on the server (the client does it) and keeps what finished.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..client_ws import ProgressEvent
from ..errors import MalformedReply, WanAccelError
from .faults import FAULTS, UNUSABLE, Unforeseen
from .progress import Display
from .queue import Task, resume_batch
from .results import BenchSummary, summarise
from .samples import JobOutcome, QualityMetric, Sample, SampleResult, active_metrics, measure_metrics


class BenchServer(Protocol):
    """The server of a one-server batch (:class:`~wan_accel.batch.servers.ComfyBenchServer`)."""

    name: str

    def check(self) -> None:
        """Raises the reason the server cannot run the batch now (a ``WanAccelError``)."""

    def generate(self, sample: Sample, progress: Callable[[ProgressEvent], None]) -> JobOutcome:
        """Runs one sample to its downloaded outputs."""


def run_one_server(samples: Sequence[Sample], server: BenchServer, results_path: Path, config: Mapping[str, Any],
                   metrics: Sequence[QualityMetric], display: Display, retries: int = 2, probe_seconds: float = 5.0,
                   give_up_seconds: float = 300.0) -> BenchSummary:
    """Generates every sample not already successful in ``results_path`` on ``server``; returns the summary.

    Raises the server's start-up error, the error of a reply that would repeat, the server's fault when it stays
    down for ``give_up_seconds``, ``KeyboardInterrupt`` on Ctrl-C; what finished is saved in every case."""
    writer, queue = resume_batch(samples, results_path, config, display, retries)
    active = active_metrics(metrics, display.message)
    _check(server)
    display.message(f"server {server.name}: ready")
    ran: list[SampleResult] = []
    started = time.monotonic()

    def record(task: Task, result: SampleResult) -> None:
        writer.record(result)
        queue.finish(task)
        ran.append(result)
        state = f"{result.seconds:.2f} s" if result.ok else f"FAILED: {result.error}"
        display.message(f"sample {task.index}/{len(samples)}: {task.sample.id} {state}")
        display.overall(len(ran), sum(not r.ok for r in ran), len(samples) - len(writer.resumed))

    while (task := queue.take()) is not None:
        sample = task.sample
        display.message(f"sample {task.index}/{len(samples)}: {sample.id}")
        try:
            outcome = server.generate(sample, lambda event: display.progress(server.name, sample.id, event))
        except FAULTS as exc:
            if queue.lost(task, server.name):
                display.message(f"server {server.name} stopped answering during sample {sample.id} ({exc}); it runs "
                                f"again once the server answers (retry {len(task.lost_on)} of {retries})")
            else:
                record(task, SampleResult.failure(sample, f"lost {len(task.lost_on)} times, the server stopped "
                                                          f"answering while running it; last: {exc}", server.name))
            if not queue.finished:
                _wait_until_back(server, display, probe_seconds, give_up_seconds)
        except MalformedReply as exc:
            record(task, SampleResult.failure(sample, str(exc), server.name))
            raise
        except UNUSABLE:
            queue.put_back(task)
            raise
        except WanAccelError as exc:
            record(task, SampleResult.failure(sample, str(exc), server.name))
        except Exception as exc:
            error = Unforeseen(exc, f"sample {sample.id} on {server.name}")
            record(task, SampleResult.failure(sample, str(error), server.name))
            raise error from exc
        else:
            measured = measure_metrics(sample, outcome, active, display.message)
            record(task, SampleResult.success(sample, outcome, measured, server.name))
    return summarise(writer.results(), len(writer.resumed), ran, [server.name], time.monotonic() - started)


def _check(server: BenchServer) -> None:
    """``server.check()``; an exception nobody foresaw becomes an ``Unforeseen`` error."""
    try:
        server.check()
    except WanAccelError:
        raise
    except Exception as exc:
        raise Unforeseen(exc, f"the check of {server.name}") from exc


def _wait_until_back(server: BenchServer, display: Display, probe_seconds: float, give_up_seconds: float) -> None:
    """Checks the server every ``probe_seconds`` until it passes; raises its last fault after ``give_up_seconds``,
    or the reason it came back unable to run the workflow."""
    display.message(f"server {server.name} is down; checking it every {probe_seconds:g} s, for up to "
                    f"{give_up_seconds:g} s")
    deadline = time.monotonic() + give_up_seconds
    while True:
        time.sleep(probe_seconds)
        try:
            _check(server)
        except UNUSABLE:
            raise
        except WanAccelError:
            if time.monotonic() > deadline:
                raise
            continue
        display.message(f"server {server.name} is back; using it again")
        return
