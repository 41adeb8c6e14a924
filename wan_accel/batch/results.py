"""The results file of a batch (``wan-accel bench``) and its summary: one writer, atomic rewrites, resume, totals
per server.

``results.json`` holds the configuration and one entry per sample. :class:`ResultsWriter` writes it: every record
re-reads the file under a file lock, merges, and rewrites the whole file through a temporary file of its own and a
rename, so a reader (or a crash) sees the old file or the new one, never a partial one, even while several servers,
or two benches sharing one ``--out``, finish samples at once.
"""
from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import UsageError, mask_secrets
from ..quality.formulas import final_score
from .samples import Sample, SampleResult, speed_score

try:
    import fcntl
except ImportError:  # Windows: no flock; see file_lock
    fcntl = None

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
    """Writes every result atomically (:func:`write_json_atomic`). Passwords in server addresses are masked."""
    write_json_atomic(path, {"version": RESULTS_VERSION, "config": dict(config),
                             "samples": [asdict(r) for r in results]})


def write_json_atomic(path: Path, payload: Any) -> None:
    """Writes ``payload`` as JSON through a temporary file of this process and thread (two writers never share one):
    a reader sees the old file or the new one, never a partial one. Passwords in server addresses are masked."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(mask_secrets(json.dumps(payload, indent=2, ensure_ascii=False)) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror or exc}); free space or fix its folder, then run the "
                         f"same command to resume") from None
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path.lock`` (``fcntl.flock``) so benches sharing one ``--out`` take turns at
    read-merge-write; where ``fcntl`` is missing (Windows) the per-writer temporary name still keeps files whole."""
    if fcntl is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot create the lock file {lock_path} ({exc.strerror or exc}); fix the folder's "
                         f"permissions, then run the same command to resume") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ResultsWriter:
    """Owns this batch's entries of ``results.json``: loads what an earlier run finished, records each new result
    (thread-safe), keeps the file in the order of the pairs. Another bench writing the same file (same ``--out``)
    keeps its entries: each record re-reads the file under a lock and merges before writing."""

    def __init__(self, path: Path, config: Mapping[str, Any], samples: Sequence[Sample]):
        self.path, self.config = path, dict(config)
        self._order = [s.id for s in samples]
        earlier = read_results(path, config)
        self._results = {i: earlier[i] for i in self._order if i in earlier}
        self.resumed = frozenset(i for i, r in self._results.items() if r.ok)
        self._recorded: set[str] = set()   # ids this writer recorded: its own word beats the file's
        self._lock = threading.Lock()

    def record(self, result: SampleResult) -> None:
        """Adds or replaces one sample's result and rewrites the file, merged with what others wrote meanwhile."""
        with self._lock, file_lock(self.path):
            self._results[result.id] = result
            self._recorded.add(result.id)
            on_disk = read_results(self.path, self.config)
            merged = {**on_disk, **{i: self._results[i] for i in self._recorded}}
            self._results.update((i, merged[i]) for i in self._order if i in merged)
            ours = set(self._order)
            order = self._order + [i for i in on_disk if i not in ours]
            write_results(self.path, self.config, [merged[i] for i in order if i in merged])

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
        final = final_score(self.metric_means, self.score)
        if final is not None:
            out.append(f"final score {final:.4f} = 0.2 x (subject + background + smoothness + imaging + speed score)")
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
