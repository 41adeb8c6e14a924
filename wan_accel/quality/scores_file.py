"""``scores.json``: one record per video keyed by sample id, the metrics it was made with, and the summary.

Written atomically under the results file's lock (several bench threads score at once); a file made with other
metrics is refused rather than mixed, and records already there are kept (resume).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..batch.results import file_lock, write_json_atomic
from ..errors import UsageError
from .scoring import summarise_scores

SCORES_VERSION = 1


def read_scores(path: Path) -> dict[str, Any]:
    """A scores file as written by :class:`ScoresFile`, or a ``UsageError`` naming the fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("samples"), dict) or not isinstance(data.get("metrics"), list):
            raise ValueError("no samples or metrics")
    except (OSError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path} is not a scores file of wan-accel score ({exc}); move it away to start afresh")
    return data


class ScoresFile:
    """The records of one ``scores.json``; :meth:`add` merges one record and rewrites the file with its summary."""

    def __init__(self, path: Path, metrics: Sequence[str]):
        self.path, self.metrics = path, list(metrics)
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            data = read_scores(path)
            if data["metrics"] != self.metrics:
                raise UsageError(f"{path} holds scores of the metrics {','.join(data['metrics'])}; use another "
                                 f"--out, the same --metrics, or delete the file to start afresh")
            self.records = dict(data["samples"])
        self._lock = threading.Lock()

    def has(self, sample_id: str) -> bool:
        """Whether this sample is already scored (resume skips it)."""
        return sample_id in self.records

    def add(self, record: Mapping[str, Any]) -> None:
        """Adds or replaces one video's record, merged with what other writers saved meanwhile."""
        with self._lock, file_lock(self.path):
            if self.path.is_file():
                self.records = {**read_scores(self.path)["samples"], **self.records}
            self.records[str(record["id"])] = dict(record)
            write_json_atomic(self.path, {"version": SCORES_VERSION, "metrics": self.metrics,
                                          "summary": summarise_scores(list(self.records.values())),
                                          "samples": self.records})
