"""``tests/data/object_info_wan_accel.json`` (our nodes' ``GET /object_info``, read by the offline workflow tests) is
current on every host CI runs.

The file is written from the newest host (ComfyUI 0.33): ``WAN_ACCEL_WRITE_OBJECT_INFO=1`` with that host rewrites
it and fails on purpose (a write is not a check); rerun without the variable to compare. An older host emits fewer node-level schema fields (0.3.64 lacks ``search_aliases``, ``dev_only`` and others);
there the file must equal what the host serves once those fields, and only those, are left out, and with output
names as that host renders them (0.3.64 names a V3 output by its type, 0.33 by its display name).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.comfy_server import ComfyServer

REPO_ROOT = Path(__file__).resolve().parents[2]
OBJECT_INFO_PATH = REPO_ROOT / "tests" / "data" / "object_info_wan_accel.json"


def normalised(object_info: dict, models_dir: Path) -> dict:
    """Our nodes' /object_info without the model files this server happens to have in its combos."""
    files = {p.relative_to(folder).as_posix() for folder in models_dir.iterdir() if folder.is_dir()
             for p in folder.rglob("*") if p.is_file()}
    ours = json.loads(json.dumps({k: v for k, v in object_info.items() if k.startswith("WanAccel")}))
    for info in ours.values():
        for section in info["input"].values():
            for spec in section.values():
                if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) and "options" in spec[1]:
                    spec[1]["options"] = [o for o in spec[1]["options"] if o not in files]
    return dict(sorted(ours.items()))


HOST_SAMPLER_LISTS = ("sampler_name", "scheduler")
"""Inputs of our nodes that offer the host KSampler's own lists (the Expert Sampler's ``comfy.samplers.KSampler``
SAMPLERS / SCHEDULERS), which grow with the host: compared as this host's lists."""


def with_host_sampler_lists(ours: dict, object_info: dict) -> dict:
    """``ours`` with every HOST_SAMPLER_LISTS combo's options replaced by this host's KSampler's options."""
    ours = json.loads(json.dumps(ours))
    host = object_info["KSampler"]["input"]["required"]
    for info in ours.values():
        for section in info["input"].values():
            for name in HOST_SAMPLER_LISTS:
                spec, served = section.get(name), host[name]
                if spec is None:
                    continue
                options = served[0] if isinstance(served[0], list) else served[1]["options"]
                if isinstance(spec[0], list):
                    spec[0] = list(options)
                else:
                    spec[1]["options"] = list(options)
    return ours


def as_this_host_serves(stored: dict, current: dict) -> tuple[dict, set[str]]:
    """``stored`` without the node-level fields this host does not emit, and the names of those fields; on such an
    older host, output names are taken as it renders them when it names outputs by their types."""
    emitted = set().union(*(info.keys() for info in current.values())) if current else set()
    newer = set().union(*(info.keys() for info in stored.values())) - emitted
    expected = {node: {k: v for k, v in info.items() if k not in newer} for node, info in stored.items()}
    if newer:
        for node, info in expected.items():
            served = current.get(node, {})
            if served.get("output_name") == served.get("output") and info.get("output") == served.get("output"):
                info["output_name"] = served["output_name"]
    return expected, newer


def test_object_info_file_of_our_nodes_is_current(wan_pack: ComfyServer):
    served = wan_pack.object_info()
    current = normalised(served, wan_pack.models_dir)
    if os.environ.get("WAN_ACCEL_WRITE_OBJECT_INFO") == "1":
        OBJECT_INFO_PATH.write_text(json.dumps(current, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        pytest.fail(f"wrote {OBJECT_INFO_PATH.relative_to(REPO_ROOT)}; rerun without WAN_ACCEL_WRITE_OBJECT_INFO to "
                    "check it", pytrace=False)
    stored = with_host_sampler_lists(json.loads(OBJECT_INFO_PATH.read_text(encoding="utf-8")), served)
    expected, newer_fields = as_this_host_serves(stored, current)
    print(f"\n{len(current)} nodes; schema fields of a newer host left out here: {sorted(newer_fields) or 'none'}")
    assert expected == current, (f"{OBJECT_INFO_PATH.relative_to(REPO_ROOT)} is out of date: rerun this test on the "
                                 "newest host with WAN_ACCEL_WRITE_OBJECT_INFO=1 and commit the file")
    assert all(field not in {"input", "output", "name", "display_name", "category"} for field in newer_fields)
