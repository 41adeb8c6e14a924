"""Where the post-process computes: the node's ``device`` choice resolved against the frames and the host's GPU."""
from __future__ import annotations

import torch

AUTO, CPU = "auto", "cpu"
DEVICE_CHOICES = (AUTO, CPU)


def compute_device_for(choice: str, frames_device: torch.device, accelerator: torch.device) -> torch.device:
    """``cpu``: the CPU. ``auto``: the host's compute device ``accelerator`` when it is not the CPU (frames that
    arrive on the CPU are then moved there chunk by chunk), else wherever the frames already are."""
    if choice == CPU:
        return torch.device("cpu")
    if choice != AUTO:
        raise ValueError(f"post-process device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    return accelerator if accelerator.type != "cpu" else frames_device
