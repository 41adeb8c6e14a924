"""The samples of a batch: each is waiting, in flight on one server or worker, or done.

A sample lives in exactly one of those places, so none runs in two places at once, none is taken again once done,
and none is lost. A sample whose server stopped answering goes back to the front of the line, at most ``retries``
times; after that the caller records it as failed. Driven from one thread: the one-server loop or the Ray driver.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .progress import Display
from .results import ResultsWriter
from .samples import Sample


@dataclass
class Task:
    """One sample of the batch: its 1-based position among the pairs and the servers that lost it so far."""

    sample: Sample
    index: int
    lost_on: list[str] = field(default_factory=list)


class SampleQueue:
    """The line of :class:`Task`: ``take`` the next one, then ``finish``, ``put_back`` or report it ``lost``."""

    def __init__(self, tasks: Sequence[Task], retries: int):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self._waiting = deque(tasks)
        self._in_flight: dict[str, Task] = {}
        self._done: set[str] = set()

    def take(self) -> Task | None:
        """The next waiting task, now in flight; None when none is waiting."""
        if not self._waiting:
            return None
        task = self._waiting.popleft()
        self._in_flight[task.sample.id] = task
        return task

    def finish(self, task: Task) -> None:
        """The task ended for good (succeeded, or failed in a way a retry would repeat)."""
        self._release(task)
        self._done.add(task.sample.id)

    def put_back(self, task: Task) -> None:
        """The task did not run (its server was left out, or the batch stops): first in line again, nothing counted."""
        self._release(task)
        self._waiting.appendleft(task)

    def lost(self, task: Task, server: str) -> bool:
        """``server`` stopped answering during the task: re-queued (True) unless it was already lost ``retries``
        times; then it stays in flight (False) for the caller to record its failure and ``finish`` it."""
        task.lost_on.append(server)
        if len(task.lost_on) > self.retries:
            return False
        self._release(task)
        self._waiting.appendleft(task)
        return True

    @property
    def finished(self) -> bool:
        """True when no task is waiting or in flight."""
        return not self._waiting and not self._in_flight

    @property
    def waiting(self) -> int:
        """Tasks not yet taken (re-queued ones included)."""
        return len(self._waiting)

    def _release(self, task: Task) -> None:
        if self._in_flight.pop(task.sample.id, None) is not task:
            raise RuntimeError(f"sample {task.sample.id} is not in flight")
        if task.sample.id in self._done:
            raise RuntimeError(f"sample {task.sample.id} is already done")


def resume_batch(samples: Sequence[Sample], results_path: Path, config: Mapping[str, Any], display: Display,
                 retries: int) -> tuple[ResultsWriter, SampleQueue]:
    """The results writer (earlier results loaded, the resume said) and the queue of the samples still to run."""
    writer = ResultsWriter(results_path, config, samples)
    if writer.resumed:
        display.message(f"resuming: {len(writer.resumed)} finished sample(s) in {results_path} are skipped")
    queue = SampleQueue([Task(s, i) for i, s in enumerate(samples, start=1) if s.id not in writer.resumed], retries)
    return writer, queue
