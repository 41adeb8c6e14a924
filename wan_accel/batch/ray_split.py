"""``wan-accel bench --ray --split-at K``: a pipelined split batch over stage-A and stage-B Ray workers.

Stage-A workers run steps [0, K) of each sample and hand its payload to a bounded queue on the driver (at
most one waiting payload per stage-B worker: an A worker takes a new sample only while the queue has room); stage-B
workers take payloads from it and finish the samples. Both stages stay busy across the batch, and each worker only
ever runs its own stage, so with Wan 2.2's ``wan22_reference`` split each keeps its own expert resident. Results,
resume, progress, Ctrl-C, down servers and the ``/history`` audit are :class:`~wan_accel.batch.ray_batch.RayBatch`'s;
each result also names the workers that ran stage A and stage B. A sample whose stage B is lost goes back to stage A.
The workers own their servers (``bench --ray --split-at K``) or wrap given pairs (``--split-at K --server A --server
B ...``: the first of each pair runs stage A, the second stage B).
"""
from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..client_files import save
from .progress import Display
from .queue import SampleQueue, Task, resume_batch
from .ray_batch import Patience, RayBatch, drive
from .ray_pool import RayWorker
from .ray_worker import SampleReply
from .results import BenchSummary, ResultsWriter
from .samples import JobOutcome, QualityMetric, Sample, SampleResult, measure_metrics
from .split_batch import joined


@dataclass(frozen=True)
class Handoff:
    """A sample between its stages: its task, stage A's payload (name, bytes), reply and worker."""

    task: Task
    payload: tuple[str, bytes]
    reply: SampleReply
    worker: str


def stage_counts(workers: int) -> tuple[int, int]:
    """(stage-A workers, stage-B workers) of ``workers``: half each, the odd one to stage B (it also decodes)."""
    return workers // 2, workers - workers // 2


class RaySplitBatch(RayBatch):
    """The driver's loop of a pipelined split: stage-A workers feed the bounded hand-off queue, stage-B workers
    drain it."""

    def __init__(self, writer: ResultsWriter, queue: SampleQueue, stage_a: list[RayWorker],
                 stage_b: list[RayWorker], metrics: Sequence[QualityMetric], display: Display, total: int,
                 videos: Path, overwrite: bool, split_at: int, transfer: str, patience: Patience = Patience()):
        super().__init__(writer, queue, [*stage_a, *stage_b], metrics, display, total, videos, overwrite, patience)
        self.stage_a, self.stage_b = stage_a, stage_b
        self.split_at, self.transfer = split_at, transfer
        self.handoffs: deque[Handoff] = deque()
        self.depth = len(stage_b)
        self.carrying: dict[str, Handoff] = {}

    def _dispatch(self) -> None:
        for worker in self.stage_b:
            if worker.idle and self.handoffs:
                handoff = self.handoffs.popleft()
                self.carrying[worker.label] = handoff
                worker.task, worker.ref = handoff.task, worker.actor.stage_b.remote(
                    handoff.task.sample, self.split_at, self.transfer, handoff.payload)
                self.display.message(f"sample {handoff.task.index}/{self.total}: {handoff.task.sample.id} stage B "
                                     f"on {worker.label}")
        for worker in self.stage_a:
            if not worker.idle or len(self.handoffs) >= self.depth:
                continue
            task = self.queue.take()
            if task is None:
                return
            worker.task, worker.ref = task, worker.actor.stage_a.remote(task.sample, self.split_at, self.transfer)
            self.display.message(f"sample {task.index}/{self.total}: {task.sample.id} stage A on {worker.label}")

    def stages(self) -> list[list[RayWorker]]:
        """Stage A and stage B: the batch stops when either has no server left."""
        return [self.stage_a, self.stage_b]

    def _succeeded(self, worker: RayWorker, task: Task, reply: SampleReply) -> None:
        if any(worker is w for w in self.stage_a):
            [payload] = reply.files
            self.handoffs.append(Handoff(task, payload, reply, worker.label))
            return self.display.message(f"sample {task.index}/{self.total}: {task.sample.id} stage A "
                                        f"{reply.seconds:.2f} s on {worker.label}, payload {len(payload[1])} bytes "
                                        f"({self.transfer}) waiting for stage B")
        handoff = self.carrying.pop(worker.label)
        paths = [save([data], self.videos / name, self.overwrite) for name, data in reply.files]
        first = handoff.reply
        outcome = joined(JobOutcome(first.seconds, first.queue_seconds, first.host_seconds, []),
                         JobOutcome(reply.seconds, reply.queue_seconds, reply.host_seconds, paths), 0.0)
        measured = measure_metrics(task.sample, outcome, self.metrics, self.display.message)
        result = SampleResult.success(task.sample, outcome, measured, self._server(worker))
        self._record(task, dataclasses.replace(result, stage_a=handoff.worker, stage_b=worker.label), worker)


def run_ray_split(samples: Sequence[Sample], stage_a: Sequence[RayWorker], stage_b: Sequence[RayWorker],
                  results_path: Path, videos: Path, config: Mapping[str, Any], metrics: Sequence[QualityMetric],
                  display: Display, retries: int, split_at: int, transfer: str, overwrite: bool = False,
                  patience: Patience = Patience()) -> BenchSummary:
    """Generates every sample not already successful in ``results_path``, split at ``split_at``: stage A on the
    ``stage_a`` workers, stage B on the ``stage_b`` workers, pipelined."""
    writer, queue = resume_batch(samples, results_path, config, display, retries)
    display.message(f"split at step {split_at}, {transfer} transfer: stage A on "
                    f"{', '.join(w.label for w in stage_a)}, stage B on {', '.join(w.label for w in stage_b)}")
    batch = RaySplitBatch(writer, queue, list(stage_a), list(stage_b), metrics, display, len(samples), videos,
                          overwrite, split_at, transfer, patience)
    return drive(batch, writer, [w.label for w in stage_b])
