"""What a ComfyUI server's ``/history`` says it ran for a bench: one entry per prompt, with its sample and times.

A bench names its outputs ``wan_accel/bench/<sample id>`` (:mod:`wan_accel.batch.servers`), which ComfyUI saves as
``<sample id>_00001_.<ext>``; the history's ``execution_start`` / ``execution_success`` stamps are the server's own
milliseconds. A bench on Ray checks with it that no sample ran twice; ``benchmarks/ray_wrap_vs_own.py`` measures
the idle gap between a server's prompts with it. Each entry's ``prompt`` holds the ``client_id`` that queued it, so a
worker counts only its own prompts on a server that also ran others.
"""
from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..client_ws import status_messages

OUTPUT_NAME = re.compile(r"^(?P<sample>.+)_\d{5}_\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class PromptRun:
    """One prompt in a server's history: the bench samples its outputs name, its status, the server's timestamps
    (seconds since the epoch; None when the server stamped none)."""

    samples: tuple[str, ...]
    status: str
    started: float | None
    ended: float | None


def read_history(url: str, timeout: float = 30.0) -> Mapping[str, Any]:
    """``GET URL/history``: every prompt the server remembers."""
    with urllib.request.urlopen(f"{url}/history", timeout=timeout) as reply:
        return json.loads(reply.read())


def prompt_runs(history: Mapping[str, Any], client_id: str | None = None) -> list[PromptRun]:
    """The prompts of a ``/history`` reply (only those ``client_id`` queued, when given), ordered by when they
    started."""
    runs = []
    for entry in history.values():
        if not isinstance(entry, Mapping) or (client_id is not None and _client_of(entry) != client_id):
            continue
        status = entry.get("status") if isinstance(entry.get("status"), Mapping) else {}
        stamps = {event: data.get("timestamp") for event, data in status_messages(entry)}
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), Mapping) else {}
        samples = sorted({match.group("sample") for node in outputs.values() if isinstance(node, Mapping)
                          for items in node.values() if isinstance(items, list)
                          for item in items if isinstance(item, Mapping)
                          if (match := OUTPUT_NAME.match(str(item.get("filename", ""))))})
        start, end = stamps.get("execution_start"), stamps.get("execution_success")
        runs.append(PromptRun(tuple(samples), str(status.get("status_str")),
                              start / 1000 if isinstance(start, (int, float)) else None,
                              end / 1000 if isinstance(end, (int, float)) else None))
    return sorted(runs, key=lambda run: run.started if run.started is not None else float("inf"))


def _client_of(entry: Mapping[str, Any]) -> str | None:
    """The ``client_id`` of a history entry: its ``prompt`` is [number, id, graph, extra_data, outputs]."""
    prompt = entry.get("prompt")
    extra = prompt[3] if isinstance(prompt, (list, tuple)) and len(prompt) > 3 else None
    return extra.get("client_id") if isinstance(extra, Mapping) else None


def successes_per_sample(runs: Sequence[PromptRun]) -> dict[str, int]:
    """How many successful prompts produced each sample's outputs."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.status == "success":
            for sample in run.samples:
                counts[sample] = counts.get(sample, 0) + 1
    return counts


def idle_gaps(runs: Sequence[PromptRun]) -> list[float]:
    """Seconds the server sat idle between one prompt's end and the next one's start."""
    timed = [run for run in runs if run.started is not None and run.ended is not None]
    return [later.started - earlier.ended for earlier, later in zip(timed, timed[1:])]
