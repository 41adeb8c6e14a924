"""Workflow settings that a CPU-only ComfyUI cannot run at a usable speed, and the ``--set`` that fixes each.

Measured on a 2-core CPU with torch 2.x: an fp16 matmul takes ~100x an fp32 one and an fp16 3-D convolution ~15x
(no fast fp16 CPU kernels), so the winner's fp16 VAE decodes at ~22 s per frame where fp32 decodes the whole tiny
test video in 8 s. bf16 costs ~2x on the same CPU: slower, still usable, not flagged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import node_label


@dataclass(frozen=True)
class CpuRule:
    """One loader input whose value ``unfit`` is too slow (or falls back) without a GPU; ``use`` is the fix."""

    class_type: str
    input_name: str
    unfit: Callable[[Any], bool]
    use: str
    why: str


CPU_RULES: tuple[CpuRule, ...] = (
    CpuRule("WanAccelLoadVAE", "precision", lambda v: v == "fp16", "fp32",
            "fp16 convolutions have no fast CPU kernels: the decode takes ~22 s per frame (fp32 ~15x faster)"),
    CpuRule("WanAccelLoadDiTGGUF", "compute_dtype", lambda v: v == "fp16", "auto",
            "fp16 matmuls on a CPU take ~100x fp32 ones; auto picks the host's CPU dtype"),
    CpuRule("WanAccelLoadDiTGGUF", "compute", lambda v: v == "fp8 W8A8", "int8 W8A8",
            "fp8 matmuls are emulated on a CPU; int8 W8A8 runs exact int8 there (or use bf16/fp16)"),
    CpuRule("WanAccelPatchAttention", "backend", lambda v: isinstance(v, str) and v.startswith("sageattn"), "sdpa",
            "sageattention kernels need a CUDA GPU: every call falls back to PyTorch SDPA"),
)


def cpu_only(stats: Mapping[str, Any]) -> bool | None:
    """From a server's ``/system_stats``: True when its only devices are CPUs, None when it lists none."""
    devices = [d for d in stats.get("devices", []) if isinstance(d, Mapping)]
    if not devices:
        return None
    return all(str(d.get("type", "")).lower() == "cpu" for d in devices)


def cpu_warnings(graph: Mapping[str, Any]) -> list[str]:
    """One line per input of ``graph`` that a CPU-only server cannot run usefully: node, value, why, the --set fix."""
    lines = []
    for node_id in sorted(graph, key=lambda k: (len(k), k)):
        node = graph[node_id]
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for rule in CPU_RULES:
            value = inputs.get(rule.input_name)
            if node.get("class_type") == rule.class_type and rule.input_name in inputs and rule.unfit(value):
                lines.append(f"#{node_id} {node_label(graph, node_id)}: {rule.input_name}={value} on a CPU-only "
                             f"server: {rule.why} -> use --set {node_id}.{rule.input_name}={rule.use}")
    return lines
