"""``wan-accel bench --split-at K``: the pieces of a sample whose denoising is split across two servers.

Stage A (steps [0, K) and the payload they leave) runs on one server, stage B (the payload read, steps [K, n),
decode, post-process, save) on another; the payload goes through the driver. The stage graphs come from
:func:`wan_accel.split_graph.split_graph`; the payload is named after the sample (``wan_accel/split/<id>``), so a
server's ``/history`` names the sample of each stage it ran. Run by the Ray workers
(:mod:`wan_accel.batch.ray_worker`) in the pipeline of :mod:`wan_accel.batch.ray_split`, over the servers of
``--server A --server B`` pairs or over workers owning their servers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..client import ComfyClient, ProgressEvent
from ..errors import UsageError
from ..graph_fill import Overrides, fill
from ..split_graph import SplitGraphs, split_graph
from ..split_run import payload_file, run_stage_a, run_stage_b
from .samples import JobOutcome, Sample
from .servers import sample_overrides


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
