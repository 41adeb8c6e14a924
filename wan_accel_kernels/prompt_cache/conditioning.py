"""A host CONDITIONING (``[[cond_tensor, {extras}], ...]``) to safetensors tensors + string metadata and back.

Tensors (the cond and any tensor extras) are stored bit-exact, in their own dtype; JSON-able extras (None,
numbers, strings, lists of those) go to the metadata. Anything else (hooks, callables) makes the conditioning
uncacheable, which the caller reports instead of storing a lossy copy.
"""
from __future__ import annotations

import json
from typing import Any

import torch

LAYOUT_KEY = "wan_accel_conditioning"
COND = "cond.{}"
EXTRA = "extra.{}.{}"


class UncacheableConditioning(ValueError):
    """The conditioning holds a value that cannot be stored exactly."""


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    return False


def encode_conditioning(conditioning: list) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` that :func:`decode_conditioning` turns back into an equal conditioning."""
    tensors: dict[str, torch.Tensor] = {}
    layout = []
    for index, (cond, extras) in enumerate(conditioning):
        tensors[COND.format(index)] = cond
        tensor_extras, json_extras = [], {}
        for name, value in extras.items():
            if isinstance(value, torch.Tensor):
                tensors[EXTRA.format(index, name)] = value
                tensor_extras.append(name)
            elif _is_json(value):
                json_extras[name] = value
            else:
                raise UncacheableConditioning(f"extra {name!r} is a {type(value).__name__}")
        layout.append({"tensors": tensor_extras, "values": json_extras})
    return tensors, {LAYOUT_KEY: json.dumps(layout)}


def decode_conditioning(tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                        device: torch.device | str = "cpu") -> list:
    """The conditioning stored by :func:`encode_conditioning`; KeyError/ValueError if the entry does not match."""
    layout = json.loads(metadata[LAYOUT_KEY])
    conditioning = []
    for index, item in enumerate(layout):
        extras = dict(item["values"])
        for name in item["tensors"]:
            extras[name] = tensors[EXTRA.format(index, name)].to(device)
        conditioning.append([tensors[COND.format(index)].to(device), extras])
    if not conditioning:
        raise ValueError("the entry holds no conditioning")
    return conditioning
