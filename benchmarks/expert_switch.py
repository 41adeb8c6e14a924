"""Bytes and seconds of one Wan 2.2 expert switch: the next expert's Q6_K blocks from host RAM to the compute device.

A switch moves one expert's block linears (``lib/wan22_expert.py``: 40 blocks in Q6_K) to the device. Every mode
allocates the device tensors and copies into them (``torch.empty(..., device).copy_``, what a module's
``.to(device)`` does), so the same code runs on a CPU:

* ``pageable``: the expert waits in ordinary host RAM (the baseline: a plain offload);
* ``pinned``: it waits in page-locked RAM and is copied with ``non_blocking`` (CUDA only);
* ``reload``: it is not kept at all and is read back from its file (safetensors, warm page cache) and copied.

It prints bytes moved, seconds and GB/s per switch and the ratios against ``pageable`` measured in the same run.

    python -m benchmarks.expert_switch                 # CPU: 2 blocks; CUDA: all 40 blocks (about 11.7 GB)
    python -m benchmarks.expert_switch --blocks 4 --repeats 5 --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmarks.lib.wan22_expert import BLOCK_LINEARS, BLOCKS, Q6_K_BYTES_PER_256, expert_q6_k_bytes


def expert_blocks(blocks: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random uint8 stand-ins of ``blocks`` blocks' Q6_K weights, one tensor per linear (row-major block bytes)."""
    generator = torch.Generator().manual_seed(seed)
    return {f"blocks.{b}.{name}.weight": torch.randint(0, 256, (rows, columns // 256 * Q6_K_BYTES_PER_256),
                                                       dtype=torch.uint8, generator=generator)
            for b in range(blocks) for name, (rows, columns) in BLOCK_LINEARS.items()}


def to_device(tensors: dict[str, torch.Tensor], device: torch.device, non_blocking: bool) -> dict[str, torch.Tensor]:
    """What a switch does: allocate each tensor on ``device`` and copy it there; waits for the copies."""
    moved = {name: torch.empty(t.shape, dtype=t.dtype, device=device).copy_(t, non_blocking=non_blocking)
             for name, t in tensors.items()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return moved


@dataclass
class SwitchResult:
    """One mode's switch: bytes moved, median seconds over the repeats, GB/s."""

    mode: str
    bytes_moved: int
    seconds: float
    gb_per_s: float


def time_switch(mode: str, move, nbytes: int, repeats: int) -> SwitchResult:
    """The median of ``repeats`` calls of ``move`` (after one warm-up), freeing the moved copy each time."""
    del_after = move()
    del del_after
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        moved = move()
        times.append(time.perf_counter() - started)
        del moved
    seconds = statistics.median(times)
    return SwitchResult(mode, nbytes, seconds, nbytes / seconds / 1e9)


def measure(blocks: int, device: torch.device, repeats: int, folder: Path) -> list[SwitchResult]:
    """Every mode this machine has, ``pageable`` first (the baseline)."""
    pageable = expert_blocks(blocks)
    nbytes = sum(t.numel() * t.element_size() for t in pageable.values())
    results = [time_switch("pageable", lambda: to_device(pageable, device, False), nbytes, repeats)]
    if device.type == "cuda":
        pinned = {name: t.pin_memory() for name, t in pageable.items()}
        results.append(time_switch("pinned", lambda: to_device(pinned, device, True), nbytes, repeats))
        del pinned
    path = folder / "expert.safetensors"
    save_file(pageable, str(path))
    results.append(time_switch("reload", lambda: to_device(load_file(str(path)), device, False), nbytes, repeats))
    return results


def report(results: list[SwitchResult], blocks: int, device: torch.device) -> list[str]:
    """The printed lines: one per mode with its ratio against ``pageable``, then the full-expert estimate."""
    baseline = results[0].seconds
    lines = [f"expert switch on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}),"
             f" {blocks} of {BLOCKS} blocks, Q6_K blocks only"]
    for r in results:
        lines.append(f"  {r.mode:9s} {r.bytes_moved / 2**30:7.3f} GiB in {r.seconds:8.4f} s = {r.gb_per_s:6.2f} GB/s"
                     f"  ({baseline / r.seconds:.2f}x the pageable copy's speed)")
    full = expert_q6_k_bytes()
    best = min(results, key=lambda r: r.seconds)
    lines.append(f"  a whole expert's blocks: {full / 2**30:.2f} GiB -> {full / best.gb_per_s / 1e9:.2f} s per switch "
                 f"at this run's best rate ({best.mode}); measured on {blocks} blocks, scaled by bytes")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--blocks", type=int, help="expert blocks to move (default: 40 on CUDA, 2 on a CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    blocks = args.blocks or (BLOCKS if device.type == "cuda" else 2)
    with tempfile.TemporaryDirectory(prefix="wan_accel_switch_") as folder:
        results = measure(blocks, device, args.repeats, Path(folder))
    print("\n".join(report(results, blocks, device)))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
