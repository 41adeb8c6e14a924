"""``wan-accel bench --split-at K``: every sample's denoising split across a pair of servers (or Ray workers).

Stage A (steps [0, K) and Export Latent) runs on the pair's first server, stage B (Import Latent, steps [K, n),
decode, post-process, save) on its second; the payload goes through the client. The stage graphs come from
:func:`wan_accel.split_graph.split_graph`; the payload is named after the sample (``wan_accel/split/<id>``), so a
server's ``/history`` names the sample of each stage it ran. Used by the thread-per-server batch
(:class:`SplitBenchServer`, one per ``--server A --server B`` pair) and by the Ray pipeline
(:mod:`wan_accel.batch.ray_split`).
"""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..client import ComfyClient, ProgressEvent
from ..errors import UsageError
from ..graph_fill import Overrides, fill
from ..split_graph import SplitGraphs, split_graph
from ..split_run import payload_file, run_stage_a, run_stage_b
from .samples import JobOutcome, Sample
from .servers import check_graph, sample_overrides, server_name


def sample_graphs(template: Mapping[str, Any], base: Overrides, sample: Sample | None, split_at: int,
                  transfer: str) -> SplitGraphs:
    """The two stage graphs of one sample (or of the batch's settings alone, for the start-up check)."""
    overrides = base if sample is None else sample_overrides(base, sample)
    graphs = split_graph(fill(template, overrides), split_at, transfer)
    if sample is not None:
        graphs.stage_a[graphs.export_id]["inputs"]["filename_prefix"] = f"wan_accel/split/{sample.id}"
    return graphs


def stage_a_outcome(client: ComfyClient, graphs: SplitGraphs, image: Path, folder: Path,
                    progress: Callable[[ProgressEvent], None], timeout: float) -> JobOutcome:
    """Stage A on ``client``'s server; the outcome's one output is the payload, downloaded into ``folder``."""
    executed = run_stage_a(client, graphs, image, progress, timeout)
    local = client.download(payload_file(executed, graphs, f"the history of {client.base_url}"), folder, True)
    return JobOutcome(executed.seconds, executed.queue_seconds, executed.host_seconds(), [local])


def stage_b_outcome(client: ComfyClient, graphs: SplitGraphs, image: Path, payload: Path, out_dir: Path,
                    progress: Callable[[ProgressEvent], None], timeout: float, overwrite: bool) -> JobOutcome:
    """Stage B on ``client``'s server from the local ``payload`` (uploaded first); outputs into ``out_dir``."""
    executed, paths = run_stage_b(client, graphs, image, client.upload_image(payload), out_dir, progress, timeout,
                                  overwrite)
    return JobOutcome(executed.seconds, executed.queue_seconds, executed.host_seconds(), paths)


def joined(stage_a: JobOutcome, stage_b: JobOutcome, carried: float) -> JobOutcome:
    """One sample's outcome from its two stages: both generation times and the payload's carrying, both queues."""
    hosts = (stage_a.host_seconds, stage_b.host_seconds)
    return JobOutcome(stage_a.seconds + carried + stage_b.seconds, stage_a.queue_seconds + stage_b.queue_seconds,
                      None if None in hosts else sum(hosts), stage_b.outputs)


def split_pairs(urls: Sequence[str]) -> list[tuple[str, str]]:
    """``--server A --server B [--server C --server D ...]`` as (stage A, stage B) pairs; a ``UsageError`` for an
    odd count."""
    if len(urls) < 2 or len(urls) % 2:
        raise UsageError(f"bench --split-at needs servers in pairs, --server A --server B (stage A on A, stage B on "
                         f"B; more pairs share the batch); got {len(urls)}")
    return list(zip(urls[::2], urls[1::2]))


class SplitBenchServer:
    """A pair of servers running every sample split: stage A on the first, stage B on the second."""

    def __init__(self, urls: tuple[str, str], template: Mapping[str, Any], base: Overrides, out_dir: Path,
                 timeout: float, split_at: int, transfer: str, overwrite: bool = False):
        self.clients = (ComfyClient(urls[0]), ComfyClient(urls[1]))
        self.name = " -> ".join(server_name(client.base_url) for client in self.clients)
        self.template, self.base, self.out_dir, self.timeout = template, base, out_dir, timeout
        self.split_at, self.transfer, self.overwrite = split_at, transfer, overwrite
        self._stopping = threading.Event()

    def check(self) -> None:
        """Each server reachable with its stage's node types (Export / Import Latent included) and model files."""
        graphs = sample_graphs(self.template, self.base, None, self.split_at, self.transfer)
        check_graph(self.clients[0], graphs.stage_a)
        check_graph(self.clients[1], graphs.stage_b)

    def generate(self, sample: Sample, progress: Callable[[ProgressEvent], None]) -> JobOutcome:
        """Stage A, the payload carried, stage B; B's outputs downloaded into ``out_dir``."""
        if not sample.image.is_file():
            raise UsageError(f"image {sample.image} does not exist")
        graphs = sample_graphs(self.template, self.base, sample, self.split_at, self.transfer)
        server_a, server_b = self.clients
        with tempfile.TemporaryDirectory(prefix="wan_accel_split_") as folder:
            stage_a = stage_a_outcome(server_a, graphs, sample.image, Path(folder), progress, self.timeout)
            self._stop_if_interrupted()
            started = time.monotonic()
            payload = server_b.upload_image(stage_a.outputs[0])
            carried = time.monotonic() - started
        executed, paths = run_stage_b(server_b, graphs, sample.image, payload, self.out_dir, progress, self.timeout,
                                      self.overwrite)
        stage_b = JobOutcome(executed.seconds, executed.queue_seconds, executed.host_seconds(), paths)
        return joined(stage_a, stage_b, carried)

    def interrupt(self) -> None:
        """Interrupts the stage in flight on either server (called from another thread)."""
        self._stopping.set()
        for client in self.clients:
            prompt_id = client.prompt_in_flight
            if prompt_id is not None:
                ComfyClient(client.base_url, timeout=10.0).interrupt(prompt_id)

    def _stop_if_interrupted(self) -> None:
        if self._stopping.is_set():
            raise KeyboardInterrupt
