"""``wan-accel run --split-at K --server A --server B``: one job's denoising split across two ComfyUI servers.

Server A runs steps [0, K) and exports its payload (the predictions it made, or for the host's two-expert pair the
latent with its leftover noise); the client downloads that payload, uploads it to server B, which runs steps
[K, n), the VAE decode and the post-process; the client downloads B's outputs. The graphs come from :mod:`wan_accel.split_graph`; the payload format from ``--transfer``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .client import ComfyClient, Execution, ProgressEvent
from .client_files import OutputFile, prepare_out_dir
from .errors import MalformedReply, UsageError, mask_secrets, node_label
from .graph_fill import Overrides, fill
from .split_graph import SplitGraphs, split_graph

TRANSFER_FORMATS = ("fp32", "bf16", "int8", "int8-channel")
"""``wan_accel_kernels.latent_payload.FORMATS``, spelled here so the client never imports torch."""
DEFAULT_TRANSFER = "fp32"


@dataclass
class SplitRun:
    """A finished split run: both stages' executions, the payload's size and transfer time, the saved files."""

    graphs: SplitGraphs
    stage_a: Execution
    stage_b: Execution
    payload_bytes: int
    transfer_seconds: float
    paths: list[Path]


def add_split_options(parser: argparse.ArgumentParser) -> None:
    """``--split-at`` and ``--transfer`` on a subcommand whose ``--server`` may be given twice."""
    parser.add_argument("--split-at", type=int, metavar="K",
                        help="split the denoising across two servers (--server A --server B): A runs steps 0..K-1, "
                             "B steps K..n-1, the decode and the post-process")
    parser.add_argument("--transfer", choices=TRANSFER_FORMATS, default=DEFAULT_TRANSFER,
                        help="format of the payload sent from A to B: fp32 (bit-exact), bf16 (half the bytes), int8 "
                             "(a quarter, a scale per 64 values), int8-channel (a scale per channel) (default fp32)")


def payload_file(execution: Execution, graphs: SplitGraphs, where: str) -> OutputFile:
    """The one payload stage A saved (Split Sampler stage A or Export Latent), as ``execution`` lists it."""
    files = [item for item in execution.files if item.node_id == graphs.export_id]
    if len(files) != 1:
        raise MalformedReply(where, f"stage A's {node_label(graphs.stage_a, graphs.export_id)} (node "
                                    f"#{graphs.export_id}) reported {len(files)} files, not one payload")
    return files[0]


def run_stage_a(client: ComfyClient, graphs: SplitGraphs, image: Path, progress: Callable[[ProgressEvent], None],
                timeout: float) -> Execution:
    """Stage A on ``client``'s server: steps [0, K) and the payload they leave (see :func:`payload_file`)."""
    stage_a = fill(graphs.stage_a, Overrides(image=client.upload_image(image)))
    return client.execute(stage_a, progress, timeout)


def run_stage_b(client: ComfyClient, graphs: SplitGraphs, image: Path, payload: str, out_dir: Path,
                progress: Callable[[ProgressEvent], None], timeout: float,
                overwrite: bool = False) -> tuple[Execution, list[Path]]:
    """Stage B on ``client``'s server reading the uploaded ``payload``; its outputs downloaded into ``out_dir``."""
    stage_b = fill(graphs.stage_b, Overrides(image=client.upload_image(image)))
    stage_b[graphs.import_id]["inputs"]["payload"] = payload
    executed = client.execute(stage_b, progress, timeout)
    return executed, [client.download(item, out_dir, overwrite) for item in executed.files]


def run_split(clients: tuple[ComfyClient, ComfyClient], template: Mapping[str, Any], overrides: Overrides,
              image: Path, out_dir: Path, split_at: int, transfer: str,
              progress: Callable[[ProgressEvent], None], timeout: float, overwrite: bool = False) -> SplitRun:
    """Stage A on ``clients[0]``, the payload carried to ``clients[1]``, stage B there; B's outputs downloaded
    into ``out_dir``."""
    if not image.is_file():
        raise UsageError(f"image {image} does not exist")
    graphs = split_graph(fill(template, overrides), split_at, transfer)
    server_a, server_b = clients
    server_a.check_model_files(graphs.stage_a)
    server_b.check_model_files(graphs.stage_b)
    executed_a = run_stage_a(server_a, graphs, image, progress, timeout)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wan_accel_split_") as folder:
        local = server_a.download(payload_file(executed_a, graphs, f"the history of {server_a.base_url}"), folder)
        size = local.stat().st_size
        payload = server_b.upload_image(local)
    moved = time.monotonic() - started
    executed_b, paths = run_stage_b(server_b, graphs, image, payload, out_dir, progress, timeout, overwrite)
    return SplitRun(graphs, executed_a, executed_b, size, moved, paths)


def _servers(args: argparse.Namespace) -> tuple[ComfyClient, ComfyClient]:
    servers = args.server or []
    if args.split_at is None:
        raise UsageError(f"{len(servers)} --server addresses: a run uses one, or two with --split-at K")
    if args.comfyui is not None:
        raise UsageError("--split-at runs on two running servers (--server A --server B), not on --comfyui")
    if len(servers) != 2:
        raise UsageError(f"--split-at needs two servers, --server A --server B (got {len(servers)}); the same "
                         f"address twice runs both stages on one server")
    return ComfyClient(servers[0]), ComfyClient(servers[1])


def run_split_command(args: argparse.Namespace, name: str, template: Mapping[str, Any], overrides: Overrides,
                      progress: Callable[[ProgressEvent], None], started: float) -> int:
    """The ``run`` subcommand with ``--split-at``: checks, runs, prints both stages' texts and times."""
    clients = _servers(args)
    out_dir = prepare_out_dir(Path(args.out))
    print(f"wan-accel run: {name} split at step {args.split_at}: stage A on {mask_secrets(clients[0].base_url)}, "
          f"stage B on {mask_secrets(clients[1].base_url)}, {args.transfer} transfer, seed {overrides.seed}")
    run = run_split(clients, template, overrides, Path(args.image), out_dir, args.split_at, args.transfer,
                    progress, args.timeout, args.overwrite)
    for stage, execution, graph in (("A", run.stage_a, run.graphs.stage_a), ("B", run.stage_b, run.graphs.stage_b)):
        for node_id, texts in execution.texts.items():
            for text in texts:
                print(f"  stage {stage} #{node_id} {node_label(graph, node_id)}: {text}")
    for saved in run.paths:
        print(f"saved {saved}")
    if not run.paths:
        print("the workflow produced no output file")
    print(f"steps 0..{args.split_at - 1} on A in {run.stage_a.seconds:.2f} s, latent payload {run.payload_bytes} "
          f"bytes ({args.transfer}) carried in {run.transfer_seconds:.2f} s, steps {args.split_at}.."
          f"{run.graphs.steps - 1} and the rest on B in {run.stage_b.seconds:.2f} s")
    print(f"wall time {time.monotonic() - started:.2f} s")
    return 0
