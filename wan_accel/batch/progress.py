"""Progress of a batch: one line per server (its sample, node and step) and an overall bar.

On a terminal the server lines and the bar stay at the bottom and redraw in place, messages scroll above them. In
a log or a pipe every message is a line, a server line is written when a node finishes its steps or warns, and the
bar after each finished sample. Thread-safe (the Ray driver and its progress polls report here).
"""
from __future__ import annotations

import sys
import threading
from typing import Protocol, Sequence, TextIO

from ..client import ProgressEvent

BAR_WIDTH = 24


class Display(Protocol):
    """Where a batch reports: messages, progress per server or worker, the overall count."""

    def message(self, text: str) -> None: ...

    def progress(self, server: str, sample_id: str, event: ProgressEvent) -> None: ...

    def overall(self, done: int, failed: int, total: int) -> None: ...


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[######..................]`` for ``done`` of ``total``."""
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class BatchDisplay:
    """The :class:`Display` of ``wan-accel bench``."""

    def __init__(self, servers: Sequence[str], stream: TextIO = sys.stdout):
        self.stream = stream
        self.tty = stream.isatty()
        self.width = max((len(name) for name in servers), default=0)
        self.lines = {name: "idle" for name in servers}
        self.total_line = ""
        self.drawn = 0
        self._lock = threading.Lock()

    def message(self, text: str) -> None:
        """A line that stays (sample started or finished, a server down or back, the summary)."""
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self._draw()

    def progress(self, server: str, sample_id: str, event: ProgressEvent) -> None:
        """A server's news about the sample it runs."""
        if event.kind == "warning":
            return self.message(f"  [{server}] {sample_id}: warning: {event.label}")
        if event.kind == "queued" and event.value > 0:
            text = f"{sample_id}: waiting in the server's queue, {event.value} prompt(s) ahead"
        elif event.kind == "node":
            text = f"{sample_id}: #{event.node_id} {event.label}"
        elif event.kind == "step" and event.total > 0:
            text = f"{sample_id}: #{event.node_id} {event.label}: step {event.value}/{event.total}"
        elif event.kind == "finished":
            text = f"{sample_id}: done, downloading its outputs"
        else:
            return None
        with self._lock:
            self.lines[server] = text
            if self.tty:
                self._clear()
                self._draw()
            elif event.kind == "step" and event.value == event.total:
                self.stream.write(f"  [{server:<{self.width}}] {text}\n")
                self.stream.flush()
        return None

    def overall(self, done: int, failed: int, total: int) -> None:
        """The count of samples this run finished, out of those it has to run."""
        failures = f", {failed} failed" if failed else ""
        with self._lock:
            self.total_line = f"{bar(done, total)} {done}/{total} done{failures}"
            self._clear()
            if not self.tty:
                self.stream.write(self.total_line + "\n")
            self._draw()

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
        self.drawn = 0

    def _draw(self) -> None:
        if self.tty:
            block = [f"  [{name:<{self.width}}] {text}" for name, text in self.lines.items()]
            block += [self.total_line] if self.total_line else []
            self.stream.write("".join(line + "\n" for line in block))
            self.drawn = len(block)
        self.stream.flush()
