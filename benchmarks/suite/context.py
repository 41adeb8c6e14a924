"""What every GPU-suite section sees: device, sizes (full or dry run), the host, the budget, shared measurements."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Optional

import torch

from benchmarks.lib.wan14b_models import FULL_14B, Bench, Shape
from benchmarks.suite.runner import SKIPPED, Budget, SectionResult

DRY_SHAPE = Shape(dim=256, layers=1, ffn=512, frames=5, height=32, width=32)
"""The dry run's sizes: the smallest the host's models and Q6_K rows (256 values) take; 8 tokens, 2 latent frames."""


@dataclass
class SuiteContext:
    """State shared by the sections; ``measured`` collects what later sections (the projection) reuse:
    ``linear_s`` (per-token linears of one forward), ``attention_s`` (kind -> one attention call),
    ``dit_rows`` (the DiT rows as dicts), ``vae_s`` (dtype -> encode + decode seconds)."""

    args: argparse.Namespace
    device: torch.device
    bench: Bench
    shape: Shape
    budget: Budget
    host: Optional[dict] = None
    host_reason: str = ""
    measured: dict = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        return bool(self.args.dry_run)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.cuda else "CPU"

    @property
    def cpu_fp32(self) -> bool:
        """The CPU dry run computes every section in fp32: half-precision kernels (3-D convolutions above all)
        crawl on a CPU, and the dry run checks the harness, not speed."""
        return self.dry_run and not self.cuda

    def dtype(self, wanted: torch.dtype) -> torch.dtype:
        """The dtype a section computes in when it measures ``wanted``: fp32 in the CPU dry run, else ``wanted``."""
        return torch.float32 if self.cpu_fp32 else wanted

    def missing_host(self) -> Optional[SectionResult]:
        """The result of a section that builds the host's models when the host did not import (skipped, with
        why), else None."""
        if self.host is None:
            return SectionResult(status=SKIPPED, reason=f"needs the host in-process: {self.host_reason}")
        return None

    def full_or_dry(self, full: float, dry: float) -> float:
        """A section's cost estimate in seconds: ``full`` for the full-size GPU run, ``dry`` for the dry run."""
        return dry if self.dry_run else full


def full_shape() -> Shape:
    """Wan 2.1 14B I2V at 832x480x81."""
    return Shape(*FULL_14B)
