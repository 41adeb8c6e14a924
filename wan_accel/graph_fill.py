"""Loads an API-format workflow and fills in one run: image, prompts, seed, steps, size, fps, model files, and any
input by node id (``--set 9.precision=fp32``)."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import UsageError
from .graph_experts import EXPERT_ROLES, SEED_INPUTS, sampler_nodes, set_expert_files, set_steps
from .workflow_catalog import ROLES, WORKFLOWS, model_files

TEXT_ENCODE = "CLIPTextEncode"
IMAGE_TO_VIDEO = "WanImageToVideo"
NON_FINITE_WORDS = {"nan", "inf", "infinity"}   # spelled as Python or JSON would, either case or sign


@dataclass(frozen=True)
class Overrides:
    """What one run changes in a workflow; None (or an absent role) keeps the workflow's value."""

    image: str | None = None
    prompt: str | None = None
    negative: str | None = None
    seed: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    length: int | None = None
    fps: float | None = None
    filename_prefix: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)   # "NODE_ID.INPUT" -> value, applied last


def load_api_workflow(path: str | Path) -> dict[str, Any]:
    """The API-format graph in ``path``; a UI-format file or broken JSON is a ``UsageError`` saying what to use."""
    path = Path(path)
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"workflow file {path} does not exist; pass {', '.join(WORKFLOWS)} or an API-format "
                         f"JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"workflow file {path} is not readable JSON: {exc}") from None
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list):
        raise UsageError(f"{path} is in the editor's UI format; the CLI needs the API format (editor: Workflow > "
                         f"Export (API); shipped ones are in workflows/api/)")
    if not isinstance(graph, dict) or not graph or not all(
            isinstance(node, dict) and "class_type" in node for node in graph.values()):
        raise UsageError(f"{path} is not an API-format workflow (a JSON object of nodes with class_type)")
    for node_id, node in graph.items():
        if not isinstance(node.get("inputs"), dict) or not isinstance(node["class_type"], str):
            raise UsageError(f"{path}: node #{node_id} has no inputs object (or its class_type is not a name); "
                             f"export the workflow again with Workflow > Export (API)")
    return graph


def nodes_of(graph: Mapping[str, Any], class_type: str) -> list[str]:
    """Ids of the nodes of one class, in id order."""
    return sorted((nid for nid, node in graph.items() if node["class_type"] == class_type), key=lambda k: (len(k), k))


def single_node(graph: Mapping[str, Any], class_type: str, purpose: str) -> str:
    """The id of the only node of ``class_type``; otherwise a ``UsageError`` saying why it is needed."""
    found = nodes_of(graph, class_type)
    if len(found) != 1:
        raise UsageError(f"to set {purpose} the workflow needs exactly one {class_type} node, it has {len(found)}")
    return found[0]


def first_sampler(graph: Mapping[str, Any], purpose: str) -> str:
    """The sampler that starts the run (KSampler, Wan 2.2 Expert Sampler, or the KSamplerAdvanced that adds the
    noise); a ``UsageError`` saying why it is needed when the graph has none."""
    found = sampler_nodes(graph)
    if not found:
        raise UsageError(f"to set {purpose} the workflow needs a KSampler, Wan 2.2 Expert Sampler or KSamplerAdvanced")
    return found[0]


def prompt_node(graph: Mapping[str, Any], polarity: str) -> str:
    """The CLIPTextEncode feeding the first sampler's ``positive`` or ``negative`` input, through nodes in between."""
    node_id, input_name = first_sampler(graph, f"the {polarity} prompt"), polarity
    for _ in range(len(graph)):
        link = graph[node_id]["inputs"].get(input_name)
        if not isinstance(link, list):
            break
        node_id = str(link[0])
        node = graph[node_id]
        if node["class_type"] == TEXT_ENCODE:
            return node_id
        input_name = polarity if polarity in node["inputs"] else "conditioning"
    raise UsageError(f"cannot find the {TEXT_ENCODE} node of the {polarity} prompt upstream of the sampler")


def _set(graph: dict, node_id: str, input_name: str, value: Any) -> None:
    inputs = graph[node_id]["inputs"]
    if input_name not in inputs:
        raise UsageError(f"node #{node_id} ({graph[node_id]['class_type']}) has no input {input_name}")
    inputs[input_name] = value


def parse_setting(text: str) -> tuple[str, Any]:
    """``ID.INPUT=VALUE`` -> (``"ID.INPUT"``, value); the value is JSON when it parses (numbers, true, null), else
    the text itself."""
    key, sep, raw = text.partition("=")
    node_id, dot, input_name = key.partition(".")
    if not (sep and dot and node_id and input_name):
        raise UsageError(f"--set {text!r}: write NODE_ID.INPUT=VALUE, e.g. --set 9.precision=fp32 (node ids are "
                         f"shown in the progress lines)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if _non_finite(value) or raw.strip().lower().lstrip("+-") in NON_FINITE_WORDS:
        raise UsageError(f"--set {text!r}: {raw} is not a finite number (NaN or infinity would make the node "
                         f"output garbage, e.g. an all-black video); give a number such as 1.0")
    return key, value


def _non_finite(value: Any) -> bool:
    """Whether a parsed JSON value is, or holds, NaN or infinity."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def fill(graph: Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A copy of ``graph`` with ``overrides`` applied; each one must find exactly the node it sets."""
    filled = copy.deepcopy(dict(graph))
    o = overrides
    if o.image is not None:
        _set(filled, single_node(filled, "LoadImage", "the image"), "image", o.image)
    if o.prompt is not None:
        _set(filled, prompt_node(filled, "positive"), "text", o.prompt)
    if o.negative is not None:
        _set(filled, prompt_node(filled, "negative"), "text", o.negative)
    if o.seed is not None:
        first_sampler(filled, "the seed")
        for node_id in sampler_nodes(filled):
            _set(filled, node_id, SEED_INPUTS[filled[node_id]["class_type"]], int(o.seed))
    if o.steps is not None:
        first_sampler(filled, "the steps")
        set_steps(filled, int(o.steps))
    for name in ("width", "height", "length"):
        if getattr(o, name) is not None:
            _set(filled, single_node(filled, IMAGE_TO_VIDEO, f"the video {name}"), name, int(getattr(o, name)))
    if o.fps is not None:
        _set(filled, single_node(filled, "CreateVideo", "the fps"), "fps", float(o.fps))
    if o.filename_prefix is not None:
        _set(filled, single_node(filled, "SaveVideo", "the output name"), "filename_prefix", o.filename_prefix)
    set_expert_files(filled, o.models)
    for role, file_name in o.models.items():
        if role in EXPERT_ROLES:
            continue
        if role not in ROLES:
            raise UsageError(f"unknown model role {role!r}; roles: {', '.join((*ROLES, *EXPERT_ROLES))}")
        refs = [ref for ref in model_files(filled) if ref.role == role]
        if not refs:
            raise UsageError(f"the workflow has no loader for the {role.replace('_', ' ')} to set {file_name} on")
        for ref in refs:
            filled[ref.node_id]["inputs"][ref.input_name] = file_name
    for key, value in o.settings.items():
        node_id, _, input_name = key.partition(".")
        if node_id not in filled:
            raise UsageError(f"--set {key}: the workflow has no node #{node_id}")
        if isinstance(filled[node_id]["inputs"].get(input_name), list):
            raise UsageError(f"--set {key}: that input is a link from another node, not a value")
        _set(filled, node_id, input_name, value)
    return filled
