"""The Ray workers of a bench as the driver sees them: connecting to Ray, starting the actors (owning their servers,
or wrapping the servers given with ``--server``), their start-up checks, and stopping them.

Workers owning their servers (``bench --ray --comfyui DIR``): one per GPU (or ``--ray-workers N`` without GPUs),
spread over the nodes, restarted by Ray when they die. Workers wrapping given servers (two or more ``--server``):
one per URL, on the driver's node (the URLs are the ones this machine reaches), never restarted; a server down at
start-up is checked again while the batch runs. Imported only where Ray is installed (the ``ray`` extra).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..errors import UsageError, mask_secrets
from ..graph_fill import Overrides
from .faults import NoServerLeft
from .progress import Display
from .queue import Task
from .ray_worker import BenchWorker, Readiness, ServerWorker, WorkerInfo
from .servers import server_name

STOP_SECONDS = 30.0       # how long workers get to stop their servers at the end


@dataclass(frozen=True)
class WorkerSpec:
    """What every owning worker starts: the ComfyUI folder (same path on every node), its Python, its base folder,
    the workflow and its overrides, the prompt timeout and the server's start-up limit."""

    comfyui_dir: str
    python: str | None
    base_dir: str | None
    template: Mapping[str, Any]
    base: Overrides
    timeout: float
    start_timeout: float


@dataclass
class RayWorker:
    """One actor as the driver sees it: its label, where it runs, the sample in flight, whether it is usable, and
    for one wrapping a given server (``wraps``) since when that server is down and when to check it next."""

    label: str
    actor: Any
    info: WorkerInfo | None = None
    task: Task | None = None
    ref: Any = None             # the generate call in flight
    probe: Any = None           # a ready() call: is the worker (or its server) back?
    left_out: bool = False
    wraps: bool = False
    down_since: float | None = None
    next_probe: float = 0.0
    error: str | None = None

    @property
    def idle(self) -> bool:
        """Usable and doing nothing: it can take a sample now."""
        return not self.left_out and self.down_since is None and self.ref is None and self.probe is None

    @property
    def title(self) -> str:
        """How messages name it: ``server HOST:PORT`` for a given server, ``worker N`` for one owning its own."""
        return f"server {self.label}" if self.wraps else self.label


def connect(address: str, workers: int | None) -> bool:
    """``ray.init`` on ``local`` (a new Ray on this machine, no dashboard), ``auto`` (the cluster this
    node joined with ``ray start``) or a cluster address; True when this call started the Ray it uses."""
    if address == "local":
        cpus = max(os.cpu_count() or 1, workers or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 log_to_driver=False, logging_level="WARNING")
        return True
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except ConnectionError as exc:
        raise UsageError(f"--ray {address}: no Ray cluster there ({exc}); start one with `ray start --head` on the "
                         f"head node and `ray start --address HEAD:6379` on the others, or use --ray local") from None
    return False


def plan(requested: int | None) -> tuple[int, int]:
    """(number of workers, GPUs per worker): one per GPU of the cluster (or ``requested`` of them), each holding
    one; ``requested`` CPU workers on a cluster without GPUs."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if requested is not None and requested < 1:
        raise UsageError(f"--ray-workers {requested}: give 1 or more")
    if gpus == 0 and requested is None:
        raise UsageError("the Ray cluster has no GPU; pass --ray-workers N to run N CPU workers (each ComfyUI "
                         "then runs with --cpu)")
    if gpus and requested is not None and requested > gpus:
        raise UsageError(f"--ray-workers {requested}: the cluster has {gpus} GPU(s), one per worker")
    return (requested or gpus), (1 if gpus else 0)


def start_workers(spec: WorkerSpec, count: int, gpus: int, retries: int) -> list[RayWorker]:
    """Creates the owning actors (spread over the nodes); each starts its server in its constructor."""
    options = dict(num_gpus=gpus, num_cpus=1, max_restarts=retries, max_task_retries=retries,
                   scheduling_strategy="SPREAD")
    return [RayWorker(f"worker {i}", BenchWorker.options(**options).remote(
        spec.comfyui_dir, spec.python, spec.base_dir, spec.template, spec.base, spec.timeout, spec.start_timeout))
        for i in range(1, count + 1)]


def start_server_workers(urls: Sequence[str], template: Mapping[str, Any], base: Overrides, timeout: float,
                         checked: Sequence[Mapping[str, Any] | None]) -> list[RayWorker]:
    """One wrapping actor per given server, on this node, holding no CPU (they wait on their servers);
    ``checked[i]`` is the graph server i's start-up check checks (None: the workflow)."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return [RayWorker(server_name(url), ServerWorker.options(num_cpus=0, scheduling_strategy=here).remote(
        url, template, base, timeout, graph), wraps=True) for url, graph in zip(urls, checked)]


def describe(worker: RayWorker) -> str:
    """``worker 1 on node 10.0.0.5 (pid 123, GPU 0): ComfyUI http://127.0.0.1:40123 (pid 456)``, or for a given
    server ``server 10.0.0.7:8188 (Ray worker pid 123 on node 10.0.0.5)``."""
    info = worker.info
    if worker.wraps:
        return f"{worker.title} (Ray worker pid {info.pid} on node {info.node})"
    gpus = f"GPU {','.join(info.gpus)}" if info.gpus else "CPU only"
    return (f"{worker.label} on node {info.node} (pid {info.pid}, {gpus}): ComfyUI {mask_secrets(info.server_url)} "
            f"(pid {info.server_pid})")


def wait_ready(workers: Sequence[RayWorker], display: Display, probe_seconds: float) -> None:
    """Waits for every worker's start-up check. An owning worker that fails it, or whose server did not start, is
    left out; a given server that does not answer is checked again every ``probe_seconds`` while the batch runs,
    one that cannot run the workflow is left out."""
    calls = {w.label: w.actor.ready.remote() for w in workers}
    for worker in workers:
        try:
            readiness: Readiness = ray.get(calls[worker.label])
        except RayError as exc:
            worker.left_out, worker.error = True, first_line(exc)
            display.message(f"{worker.title} left out: its worker did not start: {worker.error}")
            continue
        worker.info, worker.error = readiness.info, readiness.problem
        if readiness.problem is None:
            ready = ": ready" if worker.wraps else f", ready after {worker.info.startup_seconds:.1f} s"
            display.message(describe(worker) + ready)
        elif worker.wraps and readiness.down:
            worker.down_since = time.monotonic()
            worker.next_probe = worker.down_since + probe_seconds
            display.message(f"{worker.title} left out for now (checked again while the batch runs): "
                            f"{readiness.problem}")
        else:
            worker.left_out = True
            display.message(f"{describe(worker)} left out: {readiness.problem}")
    if all(w.left_out or w.down_since is not None for w in workers):
        lines = "".join(f"\n  {w.title}: {w.error}" for w in workers)
        raise NoServerLeft(f"no server passed the start-up check; nothing ran:{lines}")


def stop_workers(workers: Sequence[RayWorker]) -> None:
    """Stops every worker (and the servers the workers own), then the actors."""
    calls = [w.actor.stop.remote() for w in workers]
    try:
        ray.wait(calls, num_returns=len(calls), timeout=STOP_SECONDS)
    finally:
        for worker in workers:
            ray.kill(worker.actor, no_restart=True)


def first_line(exc: BaseException) -> str:
    """The last non-empty line of a Ray error (its own message, not the traceback), cut to 300 characters."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
