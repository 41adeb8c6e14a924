"""The ComfyUI servers of a batch: the list from ``--server`` and ``--servers FILE``, and one server as a batch
drives it (start-up check, one sample, interrupt): the one-server loop in this process, or a Ray worker."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from ..client import ComfyClient, ProgressEvent, generate, normalise_server
from ..errors import MissingNodeType, UsageError, mask_secrets
from ..graph_fill import Overrides, fill
from .samples import JobOutcome, Sample


def server_urls(servers: Sequence[str] | None, servers_file: str | None) -> list[str]:
    """Every server address of ``--server`` (repeatable) then ``--servers FILE`` (one a line, ``#`` comments),
    normalised; the same server twice is a ``UsageError``."""
    urls = [normalise_server(url) for url in servers or []]
    if servers_file is not None:
        try:
            text = Path(servers_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--servers {servers_file}: cannot read it ({exc}); give a text file with one server "
                             f"URL a line") from None
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        urls += [normalise_server(line) for line in lines if line]
        if not any(lines):
            raise UsageError(f"--servers {servers_file} lists no server; write one URL a line")
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise UsageError(f"server listed twice: {', '.join(repeated)}; one bench runs one prompt at a time per "
                         f"server, so list each server once")
    return urls


def server_name(url: str) -> str:
    """How a server is named in progress lines and results: ``host:port`` (plus its path, if any)."""
    parts = urlsplit(mask_secrets(url))
    return parts.netloc + parts.path


def check_graph(client: ComfyClient, graph: Mapping[str, Any]) -> None:
    """Reachable, every node type of ``graph`` loaded (ours included), every model file it names present."""
    client.system_stats()
    info = client.object_info()
    for node_id, node in sorted(graph.items(), key=lambda item: (len(item[0]), item[0])):
        if node["class_type"] not in info:
            raise MissingNodeType(node["class_type"], node_id)
    client.check_model_files(graph, info)


def sample_overrides(base: Overrides, sample: Sample) -> Overrides:
    """The batch's overrides with one sample's prompt, seed and negative; outputs named after the sample (the
    name its server's ``/history`` is read back by)."""
    return dataclasses.replace(base, prompt=sample.prompt, seed=sample.seed, negative=sample.negative or base.negative,
                               filename_prefix=f"wan_accel/bench/{sample.id}")


class ComfyBenchServer:
    """One ComfyUI server running samples of one workflow for a batch."""

    def __init__(self, url: str, template: Mapping[str, Any], base: Overrides, out_dir: Path, timeout: float,
                 overwrite: bool = False):
        self.client = ComfyClient(url)
        self.name = server_name(self.client.base_url)
        self.template, self.base, self.out_dir, self.timeout = template, base, out_dir, timeout
        self.overwrite = overwrite
        self._stopping = threading.Event()

    def check(self) -> None:
        """Reachable, every node type of the workflow loaded (ours included), every model file present."""
        check_graph(self.client, fill(self.template, self.base))

    def generate(self, sample: Sample, progress: Callable[[ProgressEvent], None]) -> JobOutcome:
        """Uploads the sample's image, runs the workflow with its prompt and seed, downloads the outputs."""
        overrides = sample_overrides(self.base, sample)
        interrupted: set[str] = set()

        def relay(event: ProgressEvent) -> None:
            prompt_id = self.client.prompt_in_flight
            if self._stopping.is_set() and prompt_id is not None and prompt_id not in interrupted:
                interrupted.add(prompt_id)  # queued just after interrupt() looked: stop it at its first message
                self.client.interrupt(prompt_id)
            progress(event)

        execution, paths = generate(self.client, self.template, overrides, sample.image, self.out_dir, relay,
                                    self.timeout, self.overwrite)
        return JobOutcome(execution.seconds, execution.queue_seconds, execution.host_seconds(), paths)

    def interrupt(self) -> None:
        """Interrupts the prompt in flight through a client of its own (called from a Ray worker's control thread
        while its sample thread owns ``self.client``); a prompt queued after this call is interrupted at its first
        message."""
        self._stopping.set()
        prompt_id = self.client.prompt_in_flight
        if prompt_id is not None:
            ComfyClient(self.client.base_url, timeout=10.0).interrupt(prompt_id)
