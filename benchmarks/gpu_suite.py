"""Every GPU figure of the pack from one command: sections in priority order within a time budget, one JSON file
and one markdown table written to ``--out``.

Sections: CUDA unit tests; the Wan 14B DiT forward at 832x480x81 (random Q6_K weights) in every configuration;
its Q6_K linears; attention at 1x40x32760x128; the Wan VAE fp16/bf16; the post-process on the GPU vs the CPU; the
fp8 text encoder vs bf16; the Wan 2.2 expert switch and one DiT step of each expert; the projected RTX 4090
time per 8-step video. A section whose estimated cost does not fit the remaining budget is skipped and named as
skipped; the outputs are rewritten after every section. ``--sections dit,linears,vae`` gives the Wan 14B tables alone.

GPU (see benchmarks/README.md for the carried host and wheels):
    COMFYUI_PATH=.gpu_carry/ComfyUI-0.3.64 python -m benchmarks.gpu_suite --out $OUT
CPU check of the harness (tiny shapes: dim 256, 1 layer, 32x32x5; every section in fp32, each stopped after
--section-limit-s and then reported as "skipped: over budget"; same JSON layout):
    COMFYUI_PATH=/path/to/ComfyUI-0.3.64 python -m benchmarks.gpu_suite --dry-run --out /tmp/suite
"""
from __future__ import annotations

import os

import torch


def main(argv: list[str] | None = None) -> dict:
    """Runs the suite; returns the report it wrote. Without CUDA, Triton kernels run in its interpreter, which Triton
    reads as each kernel is defined: so the variable is set before the sections (and the kernels) are imported."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from benchmarks.suite.command import run_suite

    return run_suite(argv)


if __name__ == "__main__":
    main()
