"""What every GPU-suite section sees: device, sizes (full or dry run), the host, the budget, shared measurements."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Optional

import torch

from suite_runner import Budget
from wan14b_models import FULL_14B, Bench, Shape

DRY_SHAPE = Shape(dim=256, layers=2, ffn=768, frames=5, height=64, width=64)


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

    def full_or_dry(self, full: float, dry: float) -> float:
        """A section's cost estimate in seconds: ``full`` for the full-size GPU run, ``dry`` for the dry run."""
        return dry if self.dry_run else full


def full_shape() -> Shape:
    """Wan 2.1 14B I2V at 832x480x81."""
    return Shape(*FULL_14B)
