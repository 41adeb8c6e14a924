"""The Ray workers of ``wan-accel bench``: actors that each run samples on one ComfyUI server.

:class:`BenchWorker` (``bench --ray --comfyui DIR``) owns its server: it starts it in its constructor
(``wan_accel.launcher``: free loopback port, only the GPU Ray gave it through ``CUDA_VISIBLE_DEVICES``, ``--cpu``
without one, its own input/output/temp/user folders), so a Ray restart of the actor is a fresh server; a server that
stops answering during a sample makes the actor exit, and Ray restarts it (``max_restarts``) and retries the sample
(``max_task_retries``). :class:`ServerWorker` (``bench --server A --server B ...``) wraps a server you run and never
starts, stops or restarts it: a sample whose server stops answering comes back ``lost``, for the driver to give to
another worker while it checks this server again. Outputs travel back as bytes, so the driver writes every file and
the one ``results.json``. Imported only where Ray is installed (the ``ray`` extra).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import ray

from ..client import ProgressEvent
from ..errors import MalformedReply, WanAccelError
from ..graph_fill import Overrides
from ..launcher import LocalComfyUI
from .faults import FAULTS, UNUSABLE
from .samples import JobOutcome, Sample
from .server_history import PromptRun, prompt_runs, read_history
from .servers import ComfyBenchServer, check_graph
from .split_batch import sample_graphs, stage_a_outcome, stage_b_outcome

WORKER_FOLDERS = ("input", "output", "temp", "user")
Job = Callable[[Path, Callable[[ProgressEvent], None]], JobOutcome]
"""What a worker runs for a sample: given a folder of its own and a progress callback, the sample's outcome."""


@dataclass(frozen=True)
class WorkerInfo:
    """Where a worker runs: its node, its process, its server (the server's pid when the worker owns it), the GPUs
    Ray gave it, its server's start-up time (0 for a server it wraps)."""

    node: str
    pid: int
    server_url: str
    server_pid: int | None
    gpus: tuple[str, ...]
    startup_seconds: float


@dataclass(frozen=True)
class Readiness:
    """A worker's start-up check: where it runs, the problem as text (None: ready; text, not the exception, so the
    driver needs no unpickling of our error types), and whether the problem is that its server does not answer."""

    info: WorkerInfo
    problem: str | None = None
    down: bool = False


@dataclass
class SampleReply:
    """What one sample gave on a worker: ``status`` ok / failed (recorded as failed) / left_out (the worker cannot
    run this workflow; the sample goes back unless ``recorded``) / lost (the server it wraps stopped answering: the
    sample goes to another worker) / interrupted (Ctrl-C: the sample goes back)."""

    status: str
    worker: WorkerInfo
    started: float                  # wall clock (time.time) when the worker took the sample
    ended: float
    seconds: float = 0.0
    queue_seconds: float = 0.0
    host_seconds: float | None = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    error: str | None = None
    recorded: bool = False


class SampleRunner:
    """What both actors share: the bench server, the start-up check, one sample at a time (whole or one split
    stage), progress, interrupt and history. A subclass sets ``info`` and says what a server lost mid-sample means."""

    def _start_runner(self, url: str, template: Mapping[str, Any], base: Overrides, timeout: float, scratch: Path,
                      checked: Mapping[str, Any] | None) -> None:
        """The bench server on ``url``; ``checked`` is the graph the start-up check checks (None: the workflow)."""
        self.scratch, self.checked = scratch, checked
        self.server = ComfyBenchServer(url, template, base, scratch / "downloads", timeout, overwrite=True)
        self.latest: tuple[str, ProgressEvent] | None = None
        self.stopping = threading.Event()

    def ready(self) -> Readiness:
        """The start-up check ``bench`` does: reachable, node types, model files."""
        try:
            if self.checked is None:
                self.server.check()
            else:
                check_graph(self.server.client, self.checked)
        except FAULTS as exc:
            return Readiness(self.info, str(exc), down=True)
        except WanAccelError as exc:
            return Readiness(self.info, str(exc))
        return Readiness(self.info)

    def generate(self, sample: Sample) -> SampleReply:
        """Runs one sample; its files come back as bytes."""
        return self._guarded(sample, lambda folder, progress: self._whole(sample, folder, progress))

    def stage_a(self, sample: Sample, split_at: int, transfer: str) -> SampleReply:
        """Stage A of a split sample (``bench --split-at``): its one file is the payload for stage B."""
        graphs = sample_graphs(self.server.template, self.server.base, sample, split_at, transfer)
        return self._guarded(sample, lambda folder, progress: stage_a_outcome(
            self.server.client, graphs, sample.image, folder, progress, self.server.timeout))

    def stage_b(self, sample: Sample, split_at: int, transfer: str, payload: tuple[str, bytes]) -> SampleReply:
        """Stage B of a split sample from stage A's ``payload`` (name, bytes): decode, post-process, outputs."""
        graphs = sample_graphs(self.server.template, self.server.base, sample, split_at, transfer)

        def run(folder: Path, progress: Callable[[ProgressEvent], None]) -> JobOutcome:
            local = folder / "payload" / payload[0]
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(payload[1])
            return stage_b_outcome(self.server.client, graphs, sample.image, local, folder, progress,
                                   self.server.timeout, overwrite=True)
        return self._guarded(sample, run)

    def _whole(self, sample: Sample, folder: Path, progress: Callable[[ProgressEvent], None]) -> JobOutcome:
        self.server.out_dir = folder
        return self.server.generate(sample, progress)

    def _guarded(self, sample: Sample, job: Job) -> SampleReply:
        """Runs ``job`` for ``sample`` in a folder of its own; the outcome's files come back as bytes."""
        started = time.time()
        downloads = self.scratch / "downloads" / sample.id
        downloads.mkdir(parents=True, exist_ok=True)
        try:
            outcome = job(downloads, lambda event: setattr(self, "latest", (sample.id, event)))
        except FAULTS as exc:
            if self.stopping.is_set():
                return SampleReply("interrupted", self.info, started, time.time())
            return self._server_lost(started, exc)
        except UNUSABLE as exc:
            recorded = isinstance(exc, MalformedReply) and not self.stopping.is_set()
            return SampleReply("left_out", self.info, started, time.time(), error=str(exc), recorded=recorded)
        except WanAccelError as exc:
            status = "interrupted" if self.stopping.is_set() else "failed"
            return SampleReply(status, self.info, started, time.time(), error=str(exc))
        finally:
            self.latest = None
        files = [(path.name, path.read_bytes()) for path in outcome.outputs]
        shutil.rmtree(downloads, ignore_errors=True)
        return SampleReply("ok", self.info, started, time.time(), outcome.seconds, outcome.queue_seconds,
                           outcome.host_seconds, files)

    def _server_lost(self, started: float, fault: WanAccelError) -> SampleReply:
        raise NotImplementedError

    @ray.method(concurrency_group="control")
    def progress(self) -> tuple[str, ProgressEvent] | None:
        """The sample in flight and the latest event its server reported (None when idle)."""
        return self.latest

    @ray.method(concurrency_group="control")
    def interrupt(self) -> None:
        """Stops the prompt in flight and any this worker would queue next (Ctrl-C on the driver)."""
        self.stopping.set()
        self.server.interrupt()

    @ray.method(concurrency_group="control")
    def history(self) -> list[PromptRun]:
        """The prompts this worker queued on its server, from the server's ``/history``."""
        return prompt_runs(read_history(self.server.client.base_url), self.server.client.client_id)


@ray.remote(concurrency_groups={"control": 1})
class BenchWorker(SampleRunner):
    """The actor owning its server: one sample at a time (default group), progress and interrupt beside it
    ("control")."""

    def __init__(self, comfyui_dir: str, python: str | None, base_dir: str | None, template: Mapping[str, Any],
                 base: Overrides, timeout: float, start_timeout: float):
        gpus = tuple(str(g) for g in ray.get_gpu_ids())
        scratch = Path(tempfile.mkdtemp(prefix="wan-accel-ray-worker-"))
        folders = []
        for name in WORKER_FOLDERS:   # two workers sharing one --comfyui-base never share these
            (scratch / name).mkdir()
            folders += [f"--{name}-directory", str(scratch / name)]
        self.comfyui = LocalComfyUI(Path(comfyui_dir), python, cpu=not gpus,
                                    base_dir=Path(base_dir) if base_dir else None, extra_args=folders,
                                    start_timeout=start_timeout).start()
        self._start_runner(self.comfyui.url, template, base, timeout, scratch, None)
        self.info = WorkerInfo(ray.util.get_node_ip_address(), os.getpid(), self.comfyui.url,
                               self.comfyui.process.pid, gpus, round(self.comfyui.startup_seconds, 3))

    def stop(self) -> None:
        """Stops the server and deletes the worker's folders (the end of the batch)."""
        self.comfyui.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _server_lost(self, started: float, fault: WanAccelError) -> SampleReply:
        """Ends this actor's process, so Ray starts a fresh one (and server) and retries the sample there."""
        self.comfyui.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
        os._exit(1)


@ray.remote(concurrency_groups={"control": 1})
class ServerWorker(SampleRunner):
    """The actor wrapping a server you run (``--server URL``): it never starts, stops or restarts it."""

    def __init__(self, url: str, template: Mapping[str, Any], base: Overrides, timeout: float,
                 checked: Mapping[str, Any] | None):
        self._start_runner(url, template, base, timeout, Path(tempfile.mkdtemp(prefix="wan-accel-ray-server-")),
                           checked)
        self.info = WorkerInfo(ray.util.get_node_ip_address(), os.getpid(), self.server.client.base_url, None, (),
                               0.0)

    def stop(self) -> None:
        """Deletes the worker's folders (the end of the batch); the server goes on."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _server_lost(self, started: float, fault: WanAccelError) -> SampleReply:
        """The server stopped answering: the sample comes back ``lost``; the driver checks the server again."""
        return SampleReply("lost", self.info, started, time.time(), error=str(fault))
