"""The shared queue of a batch over several servers: each sample is waiting, in flight on one server, or done.

A sample lives in exactly one of those places, so none runs on two servers at once, none is taken again once done,
and none is lost. A sample whose server stopped answering goes back to the front of the queue, at most
``retries`` times; after that the caller records it as failed.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from .samples import Sample


@dataclass
class Task:
    """One sample of the batch: its 1-based position among the pairs and the servers that lost it so far."""

    sample: Sample
    index: int
    lost_on: list[str] = field(default_factory=list)


class SampleQueue:
    """Thread-safe queue of :class:`Task`; servers ``take`` the next one as soon as they are free."""

    def __init__(self, tasks: Sequence[Task], retries: int):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self._waiting = deque(tasks)
        self._in_flight: dict[str, Task] = {}
        self._done: set[str] = set()
        self._changed = threading.Condition()

    def take(self, timeout: float) -> Task | None:
        """The next waiting task, now in flight; None if none came within ``timeout`` seconds (at once when the
        queue is finished)."""
        with self._changed:
            if not self._waiting and self._in_flight:
                self._changed.wait(timeout)
            if not self._waiting:
                return None
            task = self._waiting.popleft()
            self._in_flight[task.sample.id] = task
            return task

    def finish(self, task: Task) -> None:
        """The task ended for good (succeeded, or failed in a way a retry would repeat)."""
        with self._changed:
            self._release(task)
            self._done.add(task.sample.id)
            self._changed.notify_all()

    def put_back(self, task: Task) -> None:
        """The task did not run (its server was left out, or the batch stops): first in line again, nothing counted."""
        with self._changed:
            self._release(task)
            self._waiting.appendleft(task)
            self._changed.notify_all()

    def lost(self, task: Task, server: str) -> bool:
        """``server`` stopped answering during the task: re-queued (True) unless it was already lost ``retries``
        times; then it stays in flight (False) for the caller to record its failure and ``finish`` it."""
        with self._changed:
            task.lost_on.append(server)
            if len(task.lost_on) > self.retries:
                return False
            self._release(task)
            self._waiting.appendleft(task)
            self._changed.notify_all()
            return True

    def wait_change(self, timeout: float) -> None:
        """Blocks until any task moves, or ``timeout`` seconds; returns at once when the queue is finished."""
        with self._changed:
            if self._waiting or self._in_flight:
                self._changed.wait(timeout)

    @property
    def finished(self) -> bool:
        """True when no task is waiting or in flight."""
        with self._changed:
            return not self._waiting and not self._in_flight

    @property
    def waiting(self) -> int:
        """Tasks not yet taken (re-queued ones included)."""
        with self._changed:
            return len(self._waiting)

    def _release(self, task: Task) -> None:
        if self._in_flight.pop(task.sample.id, None) is not task:
            raise RuntimeError(f"sample {task.sample.id} is not in flight")
        if task.sample.id in self._done:
            raise RuntimeError(f"sample {task.sample.id} is already done")
