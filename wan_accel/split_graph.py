"""Graph surgery of a split run: one filled API workflow -> the stage A graph (steps [0, K) and Export Latent) and
the stage B graph (Import Latent, steps [K, n), decode, post-process, save).

Both stages are the host's own ``KSamplerAdvanced``: stage A adds the noise and returns with leftover noise, stage B
adds none and finishes the schedule, as in the host's two-expert Wan 2.2 template. Everything upstream of the
samplers (loaders, prompts, image encode) is kept in both stages, so stage B builds its own conditioning from the
same inputs. :func:`one_server_graph` chains the same two samplers in one graph: the reference a split run with
fp32 transfer equals bit for bit.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UsageError
from .graph_experts import sampler_nodes

LAST_STEP = 10000   # KSamplerAdvanced's end_at_step default: to the end of the schedule
EXPORT = "WanAccelExportLatent"
IMPORT = "WanAccelImportLatent"
SHARED_INPUTS = ("cfg", "sampler_name", "scheduler", "positive", "negative")
MULTISTEP_MIN_TWO = ("uni_pc", "uni_pc_bh2")   # the host's UniPC takes order min(3, steps - 1) per segment


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


def _advanced(inputs: Mapping[str, Any], model: Any, seed: int, steps: int, start: int, end: int,
              first: bool, cfg: float | None = None) -> dict[str, Any]:
    """A KSamplerAdvanced node: the first adds noise and keeps the leftover, the second adds none and finishes."""
    shared = {name: inputs[name] for name in SHARED_INPUTS}
    if cfg is not None:
        shared["cfg"] = cfg
    title = f"KSampler (steps {start}..{'end' if end == LAST_STEP else end - 1})"
    return {"class_type": "KSamplerAdvanced", "_meta": {"title": title},
            "inputs": {"model": model, "add_noise": "enable" if first else "disable", "noise_seed": seed,
                       "steps": steps, **shared, "latent_image": inputs["latent_image"], "start_at_step": start,
                       "end_at_step": end, "return_with_leftover_noise": "enable" if first else "disable"}}


def _chained(graph: Mapping[str, Any], split_at: int) -> tuple[dict[str, Any], str, str]:
    """(graph, first sampler id, second sampler id): the workflow's sampling as two chained KSamplerAdvanced
    switching at ``split_at``; a ``UsageError`` for a sampling this split does not cover."""
    chained = copy.deepcopy(dict(graph))
    samplers = sampler_nodes(chained)
    kinds = [chained[nid]["class_type"] for nid in samplers]
    if kinds == ["KSamplerAdvanced", "KSamplerAdvanced"]:
        first, second = samplers
        switch = int(chained[first]["inputs"]["end_at_step"])
        if switch != split_at:
            raise UsageError(f"--split-at {split_at}: this workflow already switches between its two "
                             f"KSamplerAdvanced at step {switch}; split there (--split-at {switch})")
        return chained, first, second
    if kinds != ["KSampler"]:
        raise UsageError(f"--split-at needs a workflow with one KSampler or the host's two KSamplerAdvanced; this one "
                         f"samples with {', '.join(kinds) or 'nothing'} (for a Wan 2.2 Expert Sampler workflow use "
                         f"the host-node twin, --workflow wan22_reference)")
    first = samplers[0]
    inputs = chained[first]["inputs"]
    if float(inputs["denoise"]) != 1.0:
        raise UsageError(f"--split-at needs the KSampler's denoise at 1.0 (node #{first} has {inputs['denoise']}); a "
                         f"partial denoise is not a split of the full schedule")
    steps, seed, second = int(inputs["steps"]), int(inputs["seed"]), _new_id(chained)
    for node in chained.values():   # whatever read the sampler's latent now reads the second stage's
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value and str(value[0]) == first:
                node["inputs"][name] = [second, value[1]]
    chained[first] = _advanced(inputs, inputs["model"], seed, steps, 0, split_at, first=True)
    chained[second] = _advanced(inputs, inputs["model"], seed, steps, split_at, LAST_STEP, first=False)
    chained[second]["inputs"]["latent_image"] = [first, 0]
    return chained, first, second


def _check_split(graph: Mapping[str, Any], first: str, split_at: int) -> int:
    inputs = graph[first]["inputs"]
    steps = int(inputs["steps"])
    if not 1 <= split_at < steps:
        raise UsageError(f"--split-at {split_at}: give a step from 1 to {steps - 1} (the workflow runs {steps} "
                         f"steps; stage A runs steps 0..K-1, stage B K..{steps - 1})")
    if inputs.get("sampler_name") in MULTISTEP_MIN_TWO and min(split_at, steps - split_at) < 2:
        raise UsageError(f"--split-at {split_at}: {inputs['sampler_name']} needs 2 or more steps in each stage (the "
                         f"host runs a 1-step {inputs['sampler_name']} segment at order 0, which ignores the model); "
                         + (f"give a step from 2 to {steps - 2}" if steps >= 4 else "run 4 or more steps (--steps 4)"))
    return steps


def one_server_graph(graph: Mapping[str, Any], split_at: int) -> dict[str, Any]:
    """The workflow with its sampling as the two chained KSamplerAdvanced of a split at ``split_at``, on one
    server: what a split run with fp32 transfer reproduces bit for bit."""
    samplers = sampler_nodes(graph)
    if samplers:
        _check_split(graph, samplers[0], split_at)
    return _chained(graph, split_at)[0]


def split_graph(graph: Mapping[str, Any], split_at: int, transfer: str) -> SplitGraphs:
    """Stage A (steps [0, ``split_at``), Export Latent in ``transfer`` format) and stage B (Import Latent, the rest
    of the workflow) of a filled workflow."""
    samplers = sampler_nodes(graph)
    if samplers:
        _check_split(graph, samplers[0], split_at)
    chained, first, second = _chained(graph, split_at)
    steps = int(chained[first]["inputs"]["steps"])
    seed = int(chained[first]["inputs"]["noise_seed"])
    run = {"seed": seed, "steps": steps, "split_step": split_at}

    consumed = {source for node in chained.values() for source in _links(node)}
    outputs = [nid for nid in chained if nid not in consumed and nid not in (first, second)]
    export_id = _new_id(chained)
    stage_a = {nid: chained[nid] for nid in _ancestors(chained, [first])}
    stage_a[export_id] = {"class_type": EXPORT, "_meta": {"title": "Export Latent (stage A)"},
                          "inputs": {"samples": [first, 0], "transfer": transfer, **run,
                                     "filename_prefix": "wan_accel/split/latent"}}

    stage_b = {nid: node for nid, node in chained.items() if nid != first}
    import_id = _new_id(chained)
    stage_b[import_id] = {"class_type": IMPORT, "_meta": {"title": "Import Latent (stage B)"},
                          "inputs": {"payload": "", "like": chained[first]["inputs"]["latent_image"], **run}}
    stage_b[second]["inputs"]["latent_image"] = [import_id, 0]
    stage_b = {nid: stage_b[nid] for nid in sorted(_ancestors(stage_b, outputs), key=lambda k: (len(k), k))}
    if second not in stage_b:
        raise UsageError("--split-at: no output of this workflow (a SaveVideo, SaveImage ...) uses the sampler's "
                         "latent, so stage B would have nothing to finish")
    return SplitGraphs(dict(sorted(stage_a.items(), key=lambda kv: (len(kv[0]), kv[0]))), stage_b, export_id,
                       import_id, steps, split_at)
