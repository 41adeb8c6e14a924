"""The samplers of an API-format graph and, in a Wan 2.2 two-expert graph, which DiT loader is which expert.

A Wan 2.2 A14B graph has two DiT loaders: one feeds the high-noise expert, one the low-noise expert. Which is which
is read from the graph, not from file names: upstream of our Expert Sampler's ``high_noise_model`` /
``low_noise_model`` inputs, or of the host's two ``KSamplerAdvanced`` (the one that adds the noise runs the
high-noise expert).
"""
from __future__ import annotations

from typing import Any, Mapping

from .errors import UsageError
from .workflow_catalog import model_files

SAMPLERS = ("KSampler", "WanAccelExpertSampler", "KSamplerAdvanced")
SEED_INPUTS = {"KSampler": "seed", "WanAccelExpertSampler": "noise_seed", "KSamplerAdvanced": "noise_seed"}
EXPERT_ROLES = {"dit_high": "high_noise_model", "dit_low": "low_noise_model"}


def _by_id(ids) -> list[str]:
    return sorted(ids, key=lambda k: (len(k), k))


def sampler_nodes(graph: Mapping[str, Any]) -> list[str]:
    """Ids of every sampler node (KSampler, Expert Sampler, KSamplerAdvanced), the first in the run first: for a
    host two-expert pair, the one that adds the noise."""
    found = _by_id(nid for nid, node in graph.items() if node["class_type"] in SAMPLERS)
    return sorted(found, key=lambda nid: graph[nid]["inputs"].get("add_noise", "enable") != "enable")


def _loader_upstream(graph: Mapping[str, Any], link: Any) -> str | None:
    """The DiT loader a MODEL link comes from, through model patches (their ``model`` input)."""
    dit_loaders = {ref.node_id for ref in model_files(graph) if ref.role == "dit"}
    for _ in range(len(graph)):
        if not isinstance(link, list) or str(link[0]) not in graph:
            return None
        node_id = str(link[0])
        if node_id in dit_loaders:
            return node_id
        link = graph[node_id]["inputs"].get("model")
    return None


def expert_loaders(graph: Mapping[str, Any]) -> dict[str, str]:
    """``{"dit_high": loader id, "dit_low": loader id}`` of a two-expert graph; empty for a one-model graph."""
    samplers = sampler_nodes(graph)
    experts = [nid for nid in samplers if graph[nid]["class_type"] == "WanAccelExpertSampler"]
    if experts:
        inputs = graph[experts[0]]["inputs"]
        found = {role: _loader_upstream(graph, inputs.get(name)) for role, name in EXPERT_ROLES.items()}
    elif [graph[nid]["class_type"] for nid in samplers] == ["KSamplerAdvanced"] * 2:
        found = {role: _loader_upstream(graph, graph[nid]["inputs"].get("model"))
                 for role, nid in zip(EXPERT_ROLES, samplers)}
    else:
        return {}
    return {role: loader for role, loader in found.items() if loader is not None}


def set_expert_files(graph: dict, models: Mapping[str, str]) -> None:
    """Puts ``--dit-high`` / ``--dit-low`` files on their loaders; refuses ``--dit`` on a two-expert graph (it
    would load one expert's weights as both) and the expert flags on a one-model graph."""
    loaders = expert_loaders(graph)
    if "dit" in models and loaders:
        raise UsageError("this workflow has two experts: give their files with --dit-high and --dit-low "
                         "instead of --dit")
    refs = {ref.node_id: ref for ref in model_files(graph)}
    for role in EXPERT_ROLES:
        if role not in models:
            continue
        if role not in loaders:
            raise UsageError(f"--{role.replace('_', '-')} needs a Wan 2.2 workflow with a high- and a low-noise "
                             f"expert; this one has one DiT: use --dit")
        graph[loaders[role]]["inputs"][refs[loaders[role]].input_name] = models[role]


def set_steps(graph: dict, steps: int) -> None:
    """Sets the step count on every sampler; the host's two-expert KSamplerAdvanced pair keeps its switch at the
    same fraction of the run (rounded, at least one step per expert)."""
    samplers = sampler_nodes(graph)
    advanced = [nid for nid in samplers if graph[nid]["class_type"] == "KSamplerAdvanced"]
    if len(advanced) == 2:
        high, low = (graph[nid]["inputs"] for nid in advanced)
        old_steps, old_switch = int(high["steps"]), int(high["end_at_step"])
        switch = min(max(round(old_switch * steps / old_steps), 1), steps - 1) if steps > 1 else steps
        high["end_at_step"], low["start_at_step"] = switch, switch
    for nid in samplers:
        graph[nid]["inputs"]["steps"] = steps
