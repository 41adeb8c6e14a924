"""The results file of a bench and its summary: one writer, atomic rewrites, resume, totals per server.

``results.json`` holds the configuration and one entry per sample. :class:`ResultsWriter` is its only writer: every
record rewrites the whole file through a temporary file and a rename, under a lock, so a reader (or a crash) sees
the old file or the new one, never a partial one, even while several servers finish samples at once.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .bench import Sample, SampleResult, speed_score
from .errors import UsageError

RESULTS_VERSION = 1


def read_results(path: Path, config: Mapping[str, Any]) -> dict[str, SampleResult]:
    """Earlier results by sample id; a file written for another configuration is a ``UsageError``."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        saved = {item["id"]: SampleResult(**item) for item in data.get("samples", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UsageError(f"{path} is not a readable results file ({exc}); move it away to start afresh") from None
    if data.get("config") != dict(config):
        changed = sorted(k for k in set(config) | set(data.get("config", {}))
                         if config.get(k) != data.get("config", {}).get(k))
        raise UsageError(f"{path} holds results of another configuration (differs in: {', '.join(changed)}); "
                         f"use another --out folder, or delete the file to start afresh")
    return saved


def write_results(path: Path, config: Mapping[str, Any], results: Sequence[SampleResult]) -> None:
    """Writes every result atomically: a reader sees the old file or the new one, never a partial one."""
    partial = path.with_name(path.name + ".tmp")
    payload = {"version": RESULTS_VERSION, "config": dict(config), "samples": [asdict(r) for r in results]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        raise UsageError(f"cannot write the results file {path} ({exc.strerror or exc}); free space or fix its "
                         f"folder, then run the same command to resume") from None


class ResultsWriter:
    """Owns ``results.json`` for one batch: loads what an earlier run finished, records each new result (thread-safe),
    keeps the file in the order of the pairs."""

    def __init__(self, path: Path, config: Mapping[str, Any], samples: Sequence[Sample]):
        self.path, self.config = path, dict(config)
        self._order = [s.id for s in samples]
        earlier = read_results(path, config)
        self._results = {i: earlier[i] for i in self._order if i in earlier}
        self.resumed = frozenset(i for i, r in self._results.items() if r.ok)
        self._lock = threading.Lock()

    def record(self, result: SampleResult) -> None:
        """Adds or replaces one sample's result and rewrites the file."""
        with self._lock:
            self._results[result.id] = result
            write_results(self.path, self.config, [self._results[i] for i in self._order if i in self._results])

    def results(self) -> list[SampleResult]:
        """Every result so far, in the order of the pairs."""
        with self._lock:
            return [self._results[i] for i in self._order if i in self._results]


@dataclass(frozen=True)
class ServerTotals:
    """What one server did in this run: successful samples and their mean generation time."""

    name: str
    samples: int
    mean_seconds: float | None


@dataclass(frozen=True)
class BenchSummary:
    """Totals over the results file (successes, failures, mean time, its speed score, mean of each metric) and, for
    this run, the samples per server and the batch wall time against the sum of its sample times."""

    total: int
    succeeded: int
    failed: int
    skipped: int
    mean_seconds: float | None
    score: float | None
    invalid_samples: int
    metric_means: dict[str, float]
    servers: tuple[ServerTotals, ...] = ()
    wall_seconds: float | None = None
    sample_seconds: float = 0.0

    @property
    def speedup(self) -> float | None:
        """Sum of this run's sample times over its wall time: about the number of servers kept busy."""
        return self.sample_seconds / self.wall_seconds if self.wall_seconds and self.sample_seconds else None

    def lines(self) -> list[str]:
        """The summary as printed lines."""
        done = f"{self.succeeded}/{self.total} samples succeeded, {self.failed} failed"
        if self.skipped:
            done += f", {self.skipped} already done (skipped)"
        out = [done]
        if self.mean_seconds is None:
            out.append("mean time: n/a (no successful sample)")
        else:
            score = "invalid (over 600 s)" if self.score is None else f"{self.score:g}"
            out.append(f"mean time per sample: {self.mean_seconds:.2f} s -> speed score {score}")
            if self.invalid_samples:
                out.append(f"{self.invalid_samples} sample(s) took over 600 s (invalid)")
        out += [f"mean {name}: {value:.3f}" for name, value in self.metric_means.items()]
        for server in self.servers:
            mean = "n/a" if server.mean_seconds is None else f"{server.mean_seconds:.2f} s/sample"
            out.append(f"server {server.name}: {server.samples} sample(s) this run, mean {mean}")
        if self.wall_seconds is not None and self.servers:
            speedup = "n/a" if self.speedup is None else f"{self.speedup:.2f}x"
            out.append(f"batch wall time {self.wall_seconds:.2f} s, sum of sample times {self.sample_seconds:.2f} s "
                       f"-> parallel speed-up {speedup}")
        return out


def summarise(results: Sequence[SampleResult], skipped: int, ran: Sequence[SampleResult] = (),
              servers: Sequence[str] = (), wall_seconds: float | None = None) -> BenchSummary:
    """Aggregates results the way the challenge scores them (mean time of the successful samples); ``ran`` are the
    results of this run, counted per server in ``servers`` against ``wall_seconds``."""
    times = [r.seconds for r in results if r.ok and r.seconds is not None]
    mean = sum(times) / len(times) if times else None
    names = sorted({name for r in results for name in r.metrics})
    metric_means = {name: sum(vals) / len(vals) for name in names
                    if (vals := [r.metrics[name] for r in results if name in r.metrics])}
    totals = []
    for server in servers:
        own = [r.seconds for r in ran if r.ok and r.server == server and r.seconds is not None]
        totals.append(ServerTotals(server, len(own), sum(own) / len(own) if own else None))
    sample_seconds = sum(r.seconds for r in ran if r.ok and r.seconds is not None)
    return BenchSummary(len(results), sum(r.ok for r in results), sum(not r.ok for r in results), skipped, mean,
                        speed_score(mean) if mean is not None else None,
                        sum(speed_score(t) is None for t in times), metric_means, tuple(totals), wall_seconds,
                        sample_seconds)
