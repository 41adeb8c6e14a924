"""Graph surgery of a split run: one filled API workflow -> the stage A graph (steps [0, K) and the payload it writes)
and the stage B graph (the payload read, steps [K, n), decode, post-process, save).

* A workflow with one ``KSampler``: it becomes our "Split Sampler" pair. Both run the host's KSampler over the whole
  schedule; stage A records every prediction before step K, stage B replays them and computes the rest
  (:mod:`nodes.split_history`), so with fp32 transfer stage B's latent is the unsplit workflow's, bit for bit, for
  multistep samplers such as uni_pc as well.
* A workflow with the host's two chained ``KSamplerAdvanced`` (Wan 2.2's two experts), split at their switch: stage
  A is the first sampler and Export Latent, stage B Import Latent and the second sampler; the latent crossing is the
  one the unsplit chain hands on.

Everything upstream of the samplers (loaders, prompts, image encode) is kept in both stages, so stage B builds its
own conditioning from the same inputs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UsageError
from .graph_experts import sampler_nodes

EXPORT = "WanAccelExportLatent"
IMPORT = "WanAccelImportLatent"
STAGE_A = "WanAccelSplitSamplerA"
STAGE_B = "WanAccelSplitSamplerB"
KSAMPLER_INPUTS = ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                   "latent_image")
PAYLOAD_PREFIX = "wan_accel/split/payload"


@dataclass(frozen=True)
class SplitGraphs:
    """The two stage graphs of one split run and the ids the client fills or reads."""

    stage_a: dict[str, Any]
    stage_b: dict[str, Any]
    export_id: str
    import_id: str
    steps: int
    split_at: int


def _links(node: Mapping[str, Any]) -> list[str]:
    return [str(value[0]) for value in node["inputs"].values() if isinstance(value, list) and value]


def _ancestors(graph: Mapping[str, Any], roots: list[str]) -> set[str]:
    """``roots`` and every node they depend on through links."""
    kept, pending = set(), list(roots)
    while pending:
        node_id = pending.pop()
        if node_id not in kept and node_id in graph:
            kept.add(node_id)
            pending.extend(_links(graph[node_id]))
    return kept


def _new_id(graph: Mapping[str, Any]) -> str:
    numbers = [int(node_id) for node_id in graph if node_id.isdigit()]
    return str(max(numbers, default=0) + 1)


def _ordered(graph: Mapping[str, Any]) -> dict[str, Any]:
    return dict(sorted(graph.items(), key=lambda kv: (len(kv[0]), kv[0])))


def _outputs(graph: Mapping[str, Any], samplers: list[str]) -> list[str]:
    """The workflow's output nodes: those nothing reads, the samplers aside."""
    consumed = {source for node in graph.values() for source in _links(node)}
    return [nid for nid in graph if nid not in consumed and nid not in samplers]


def _stage_b(graph: dict[str, Any], outputs: list[str], last: str) -> dict[str, Any]:
    """Stage B: what the workflow's ``outputs`` need; a ``UsageError`` when none of them reads the sampler."""
    stage_b = _ordered({nid: graph[nid] for nid in _ancestors(graph, outputs)})
    if last not in stage_b:
        raise UsageError("--split-at: no output of this workflow (a SaveVideo, SaveImage ...) uses the sampler's "
                         "latent, so stage B would have nothing to finish")
    return stage_b


def _one_ksampler(graph: Mapping[str, Any], sampler: str, split_at: int, transfer: str) -> SplitGraphs:
    """The split of a one-KSampler workflow into the Split Sampler pair (same node id in both stages)."""
    inputs = graph[sampler]["inputs"]
    if float(inputs["denoise"]) != 1.0:
        raise UsageError(f"--split-at needs the KSampler's denoise at 1.0 (node #{sampler} has {inputs['denoise']}); a "
                         f"partial denoise is not a split of the full schedule")
    steps = _checked_split(inputs, split_at)
    shared = {name: inputs[name] for name in KSAMPLER_INPUTS}
    shared["split_step"] = split_at
    stage_a = copy.deepcopy({nid: graph[nid] for nid in _ancestors(graph, [sampler])})
    stage_a[sampler] = {"class_type": STAGE_A, "_meta": {"title": f"Split Sampler (steps 0..{split_at - 1})"},
                        "inputs": {**copy.deepcopy(shared), "transfer": transfer, "filename_prefix": PAYLOAD_PREFIX}}
    stage_b = copy.deepcopy(dict(graph))
    stage_b[sampler] = {"class_type": STAGE_B, "_meta": {"title": f"Split Sampler (steps {split_at}..end)"},
                        "inputs": {**copy.deepcopy(shared), "payload": ""}}
    return SplitGraphs(_ordered(stage_a), _stage_b(stage_b, _outputs(graph, [sampler]), sampler), sampler, sampler,
                       steps, split_at)


def _advanced_pair(graph: Mapping[str, Any], first: str, second: str, split_at: int, transfer: str) -> SplitGraphs:
    """The split of the host's two chained KSamplerAdvanced at their switch: Export Latent / Import Latent."""
    chained = copy.deepcopy(dict(graph))
    switch = int(chained[first]["inputs"]["end_at_step"])
    if switch != split_at:
        raise UsageError(f"--split-at {split_at}: this workflow already switches between its two "
                         f"KSamplerAdvanced at step {switch}; split there (--split-at {switch})")
    steps = _checked_split(chained[first]["inputs"], split_at)
    run = {"seed": int(chained[first]["inputs"]["noise_seed"]), "steps": steps, "split_step": split_at}
    export_id = _new_id(chained)
    stage_a = {nid: chained[nid] for nid in _ancestors(chained, [first])}
    stage_a[export_id] = {"class_type": EXPORT, "_meta": {"title": "Export Latent (stage A)"},
                          "inputs": {"samples": [first, 0], "transfer": transfer, **run,
                                     "filename_prefix": PAYLOAD_PREFIX}}
    import_id = _new_id(chained)
    stage_b = {nid: node for nid, node in chained.items() if nid != first}
    stage_b[import_id] = {"class_type": IMPORT, "_meta": {"title": "Import Latent (stage B)"},
                          "inputs": {"payload": "", "like": chained[first]["inputs"]["latent_image"], **run}}
    stage_b[second]["inputs"]["latent_image"] = [import_id, 0]
    return SplitGraphs(_ordered(stage_a), _stage_b(stage_b, _outputs(graph, [first, second]), second), export_id,
                       import_id, steps, split_at)


def _checked_split(inputs: Mapping[str, Any], split_at: int) -> int:
    steps = int(inputs["steps"])
    if not 1 <= split_at < steps:
        raise UsageError(f"--split-at {split_at}: give a step from 1 to {steps - 1} (the workflow runs {steps} "
                         f"steps; stage A runs steps 0..K-1, stage B K..{steps - 1})")
    return steps


def split_graph(graph: Mapping[str, Any], split_at: int, transfer: str) -> SplitGraphs:
    """Stage A (steps [0, ``split_at``) and the payload in ``transfer`` format) and stage B (the payload read, the
    rest of the workflow) of a filled workflow; a ``UsageError`` for a sampling this split does not cover."""
    samplers = sampler_nodes(graph)
    kinds = [graph[nid]["class_type"] for nid in samplers]
    if kinds == ["KSampler"]:
        return _one_ksampler(graph, samplers[0], split_at, transfer)
    if kinds == ["KSamplerAdvanced", "KSamplerAdvanced"]:
        return _advanced_pair(graph, samplers[0], samplers[1], split_at, transfer)
    raise UsageError(f"--split-at needs a workflow with one KSampler or the host's two KSamplerAdvanced; this one "
                     f"samples with {', '.join(kinds) or 'nothing'} (for a Wan 2.2 Expert Sampler workflow use "
                     f"the host-node twin, --workflow wan22_reference)")
